"""The base of every spec model."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors (the loader reports them with a "did you mean")."""

    model_config = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)
