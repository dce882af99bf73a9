"""The only package that talks to MLflow: one parent run per sweep, one nested child run per trial.

Its face is what the rest of hypersweep uses; each module has one job:

* ``conventions``: the run conventions (tags, params, metrics; a contract, see docs/mlflow.md);
* ``store``: where the tracking store is, and whether it answers;
* ``recorder``: what Ray Tune's events mean for the sweep's runs (``SweepRecorder``);
* ``sender``: sending them, batched, through outages and refused writes, never holding up Tune;
* ``state``: the journal that carries it all across a driver crash;
* ``process``: the tracking client in a process of its own;
* ``lookup``, ``curves``, ``earlier``, ``report_data``: a sweep read back from MLflow.
"""

from __future__ import annotations

from hypersweep.redaction import redact as redact  # re-exported: shown by callers
from hypersweep.redaction import redact_settings as redact_settings
from hypersweep.tracking.conventions import (
    BEST_RUN as BEST_RUN,
)
from hypersweep.tracking.conventions import (
    BEST_TRIAL as BEST_TRIAL,
)
from hypersweep.tracking.conventions import (
    DROPPED as DROPPED,
)
from hypersweep.tracking.conventions import (
    EARLIER_TRIAL_ID as EARLIER_TRIAL_ID,
)
from hypersweep.tracking.conventions import (
    EPOCH_TIME as EPOCH_TIME,
)
from hypersweep.tracking.conventions import (
    LOST_REASON as LOST_REASON,
)
from hypersweep.tracking.conventions import (
    ROLE as ROLE,
)
from hypersweep.tracking.conventions import (
    STATUS as STATUS,
)
from hypersweep.tracking.conventions import (
    STOP_REASON as STOP_REASON,
)
from hypersweep.tracking.conventions import (
    SWEEP_ID as SWEEP_ID,
)
from hypersweep.tracking.conventions import (
    TRIAL_ID as TRIAL_ID,
)
from hypersweep.tracking.conventions import (
    WARM_START_TAG as WARM_START_TAG,
)
from hypersweep.tracking.lookup import SweepSummary as SweepSummary
from hypersweep.tracking.lookup import find_best as find_best
from hypersweep.tracking.recorder import SweepRecorder as SweepRecorder
from hypersweep.tracking.sender import FINAL_WAIT_SECONDS as FINAL_WAIT_SECONDS
from hypersweep.tracking.sender import BestTrial as BestTrial
from hypersweep.tracking.sender import dropped_writes as dropped_writes
from hypersweep.tracking.sender import refused as refused
from hypersweep.tracking.store import absolute_uri as absolute_uri
from hypersweep.tracking.store import check_tracking_uri as check_tracking_uri
from hypersweep.tracking.store import require_existing_store as require_existing_store
from hypersweep.tracking.store import resolve_tracking_uri as resolve_tracking_uri
