"""Engine layer: NewExecutionEngine, TimezoneJobQueue, the job runner and the storage port."""

from app.engine.engine import NewExecutionEngine
from app.engine.memory_store import InMemoryExecutionStore
from app.engine.ports import ExecutionStore
from app.engine.queue import TimezoneJobQueue

__all__ = ["ExecutionStore", "InMemoryExecutionStore", "NewExecutionEngine", "TimezoneJobQueue"]
