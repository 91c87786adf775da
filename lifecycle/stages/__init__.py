"""Built-in stages, one per file; registered as entry points in pyproject.toml (group genai_lifecycle.stages)."""
