"""The spec language: pydantic models, YAML loading with positions, and semantic checks."""
