"""rdvae: rate-distortion VAEs — data, models, objectives, held-out metrics and a fast trainer."""

from rdvae.cohort import CohortResult, MemberResult, check_cohort, fit_cohort, split_into_cohorts
from rdvae.data import DATASETS, DataConfig, DataSplits, load_data, resolve_user_path, synthetic_counts
from rdvae.datacheck import DatasetInfo, inspect_dataset
from rdvae.datafiles import DataError
from rdvae.evaluate import HeldOutMetrics, evaluate, iwae_log_likelihood
from rdvae.metrics import (
    active_units,
    distortion,
    elbo,
    gaussian_kl,
    is_collapsed,
    kl_per_dim,
    marginal_kl,
    mutual_info,
    rate,
)
from rdvae.models import VAE, ModelConfig, build_model
from rdvae.objectives import ObjectiveConfig, training_loss
from rdvae.serving import PosteriorMean
from rdvae.train import (
    FitResult,
    RunConfig,
    TrainConfig,
    TrainingDivergedError,
    fit,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
)

__all__ = [
    "DATASETS",
    "CohortResult",
    "VAE",
    "DataConfig",
    "DataError",
    "DatasetInfo",
    "DataSplits",
    "FitResult",
    "HeldOutMetrics",
    "MemberResult",
    "ModelConfig",
    "ObjectiveConfig",
    "PosteriorMean",
    "RunConfig",
    "TrainConfig",
    "TrainingDivergedError",
    "active_units",
    "build_model",
    "check_cohort",
    "distortion",
    "elbo",
    "evaluate",
    "fit",
    "fit_cohort",
    "gaussian_kl",
    "is_collapsed",
    "inspect_dataset",
    "iwae_log_likelihood",
    "kl_per_dim",
    "load_checkpoint",
    "load_data",
    "marginal_kl",
    "mutual_info",
    "rate",
    "resolve_device",
    "resolve_user_path",
    "save_checkpoint",
    "split_into_cohorts",
    "synthetic_counts",
    "training_loss",
]
