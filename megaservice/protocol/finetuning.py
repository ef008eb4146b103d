"""The fine-tuning and files API models of OPEA's `api_protocol` (OpenAI's shapes)."""

from typing import Literal

from fastapi import UploadFile
from pydantic import BaseModel, PositiveInt

__all__ = [
    "Error",
    "FileObject",
    "FineTuningJob",
    "FineTuningJobCheckpoint",
    "FineTuningJobIDRequest",
    "FineTuningJobList",
    "FineTuningJobListRequest",
    "FineTuningJobWandbIntegration",
    "FineTuningJobWandbIntegrationObject",
    "FineTuningJobsRequest",
    "Hyperparameters",
    "Metrics",
    "UploadFileRequest",
]

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class Hyperparameters(BaseModel):
    """Training settings; `"auto"` lets the trainer choose."""

    batch_size: Literal["auto"] | int | None = "auto"
    learning_rate_multiplier: Literal["auto"] | float | None = "auto"
    n_epochs: Literal["auto"] | int | None = "auto"


class FineTuningJobWandbIntegration(BaseModel):
    """Where a job reports to Weights and Biases."""

    project: str
    entity: str | None = None
    name: str | None = None
    tags: list[str] | None = None


class FineTuningJobWandbIntegrationObject(BaseModel):
    """One integration of a job (only `wandb` exists)."""

    type: Literal["wandb"]
    wandb: FineTuningJobWandbIntegration


class FineTuningJobsRequest(BaseModel):
    """Body of a request creating a fine-tuning job."""

    model: str
    training_file: str
    hyperparameters: Hyperparameters | None = None
    suffix: str | None = None
    validation_file: str | None = None
    integrations: list[FineTuningJobWandbIntegrationObject] | None = None
    seed: str | None = None


class Error(BaseModel):
    """Why a job failed."""

    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    """A fine-tuning job."""

    id: str
    created_at: int
    error: Error | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    organization_id: str | None = None
    result_files: list[str] | None = None
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    integrations: list[FineTuningJobWandbIntegrationObject] | None = None
    seed: int | None = None
    estimated_finish: int | None = None


class FineTuningJobIDRequest(BaseModel):
    """Names one job (retrieve, cancel)."""

    fine_tuning_job_id: str


class FineTuningJobListRequest(BaseModel):
    """Paging of a job listing."""

    after: str | None = None
    limit: PositiveInt | None = 20


class FineTuningJobList(BaseModel):
    """A page of jobs."""

    object: str = "list"
    data: list[FineTuningJob]
    has_more: bool


class UploadFileRequest(BaseModel):
    """An uploaded file and what it is for (`fine-tune`, `assistants`, `vision`, `batch`)."""

    purpose: str
    file: UploadFile


class FileObject(BaseModel):
    """A stored file."""

    id: str
    bytes: int
    created_at: int
    filename: str
    object: str = "file"
    purpose: str


class Metrics(BaseModel):
    """Training metrics at one checkpoint."""

    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    """A checkpoint a job saved."""

    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: Metrics | None = None
    object: Literal["fine_tuning.job.checkpoint"]
    step_number: int | None = None
