"""Task priorities: a small range, ordered within one tenant's queue only.

A claim serves tenants fairly first (engine/claiming.py) and takes each tenant's steps
highest priority first, oldest first within one priority: a tenant's priority 9 never
takes slots from another tenant, it only goes ahead of its own priority 5 work.
"""
from .dag import check_whole

MIN_PRIORITY = 0
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5   # a task submitted without one (and a task made before priorities, shown as such)


def check_priority(value: object) -> int:
    """``value`` (None: DEFAULT_PRIORITY) if it is a whole number in the range, else an InvalidInputError."""
    if value is None:
        return DEFAULT_PRIORITY
    return check_whole(value, "priority", MIN_PRIORITY, MAX_PRIORITY)
