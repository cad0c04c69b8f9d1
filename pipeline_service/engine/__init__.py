"""The engine: domain operations in transactions, human control, the executor loop, calling handlers."""
