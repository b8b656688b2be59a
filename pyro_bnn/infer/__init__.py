"""Inference: the ELBO, the training loop (in one process or data-parallel), checkpoints and the
posterior predictive."""

from pyro_bnn.guides.auxiliary import auxiliary_log_density

from .averaging import ParameterAverage, RunningStatisticsWarning
from .checkpoint import CHECKPOINT_FORMAT, CheckpointMismatchError, load_checkpoint, save_checkpoint
from .collapse import PosteriorCollapseWarning
from .distributed import OtherProcessError, init_distributed, is_main_process
from .fit import EpochRecord, NonFiniteLossError, TrainingInterrupted, check_batch, fit
from .kl_weight import KLWeight, blundell_weight, warmup_weight
from .posterior import posterior_samples
from .predict import ClassificationPrediction, RegressionPrediction, predict
from .trace_kl_elbo import TraceKL_ELBO

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMismatchError",
    "ClassificationPrediction",
    "EpochRecord",
    "KLWeight",
    "NonFiniteLossError",
    "OtherProcessError",
    "ParameterAverage",
    "PosteriorCollapseWarning",
    "RegressionPrediction",
    "RunningStatisticsWarning",
    "TraceKL_ELBO",
    "TrainingInterrupted",
    "auxiliary_log_density",
    "blundell_weight",
    "check_batch",
    "fit",
    "init_distributed",
    "is_main_process",
    "load_checkpoint",
    "posterior_samples",
    "predict",
    "save_checkpoint",
    "warmup_weight",
]
