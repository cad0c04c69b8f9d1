"""The standalone dashboard: ``python -m pipeline_service serve`` (docs/OPERATIONS.md, "The dashboard")."""
