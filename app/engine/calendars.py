"""Business calendars kept by the service (``/api/v2/calendars``), as the engine uses them.

``CalendarStore`` is the storage port (SqlExecutionStore and InMemoryExecutionStore implement
it through the mixins in ``app.persistence.calendar_store`` and here); ``CalendarService``
checks definitions, refuses to delete a calendar that a stored job's schedule excludes
(409), and resolves the calendars a job needs when its schedule is evaluated. A calendar
change applies to every later evaluation of the jobs that use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from app.domain.business_calendars import (
    BusinessCalendar,
    CalendarExistsError,
    CalendarInUseError,
    CalendarNotFoundError,
    calendar_problems,
)
from app.domain.errors import ConfigurationError, FieldError
from app.domain.jobs import JobQuery
from app.domain.schedule_config import calendars_used
from app.engine.ports import JobStore


@runtime_checkable
class CalendarStore(Protocol):
    async def get_calendar(self, name: str) -> BusinessCalendar | None: ...

    async def list_calendars(self) -> list[BusinessCalendar]: ...

    async def create_calendar(self, calendar: BusinessCalendar) -> None:
        """``CalendarExistsError`` when the name is taken."""

    async def replace_calendar(self, calendar: BusinessCalendar) -> bool:
        """False when there is no calendar of that name."""

    async def delete_calendar(self, name: str) -> bool:
        """False when there is no calendar of that name."""


class InMemoryCalendarStoreMixin:
    """``CalendarStore`` in process memory (for ``InMemoryExecutionStore``)."""

    _calendars: dict[str, BusinessCalendar]

    def _calendar_map(self) -> dict[str, BusinessCalendar]:
        if not hasattr(self, "_calendars"):
            self._calendars = {}
        return self._calendars

    async def get_calendar(self, name: str) -> BusinessCalendar | None:
        return self._calendar_map().get(name)

    async def list_calendars(self) -> list[BusinessCalendar]:
        return [self._calendar_map()[k] for k in sorted(self._calendar_map())]

    async def create_calendar(self, calendar: BusinessCalendar) -> None:
        if calendar.name in self._calendar_map():
            raise CalendarExistsError(calendar.name)
        self._calendar_map()[calendar.name] = calendar

    async def replace_calendar(self, calendar: BusinessCalendar) -> bool:
        if calendar.name not in self._calendar_map():
            return False
        self._calendar_map()[calendar.name] = calendar
        return True

    async def delete_calendar(self, name: str) -> bool:
        return self._calendar_map().pop(name, None) is not None


def _store(store: object) -> CalendarStore:
    if not isinstance(store, CalendarStore):
        raise TypeError(f"{type(store).__name__} does not keep business calendars")
    return store


class CalendarService:
    def __init__(self, store: object, jobs: JobStore) -> None:
        self._store = store
        self._jobs = jobs

    async def create(self, data: dict[str, Any]) -> BusinessCalendar:
        calendar = _parse(data)
        await _store(self._store).create_calendar(calendar)
        return calendar

    async def get(self, name: str) -> BusinessCalendar:
        found = await _store(self._store).get_calendar(name)
        if found is None:
            raise CalendarNotFoundError(name)
        return found

    async def list_all(self) -> list[BusinessCalendar]:
        return await _store(self._store).list_calendars()

    async def replace(self, name: str, data: dict[str, Any]) -> BusinessCalendar:
        if data.get("name") not in (None, name):
            raise ConfigurationError([FieldError("name", "must match the name in the path")])
        calendar = _parse({**data, "name": name})
        if not await _store(self._store).replace_calendar(calendar):
            raise CalendarNotFoundError(name)
        return calendar

    async def delete(self, name: str) -> None:
        await self.get(name)
        users = await self.users_of(name)
        if users:
            raise CalendarInUseError(name, users)
        if not await _store(self._store).delete_calendar(name):
            raise CalendarNotFoundError(name)

    async def users_of(self, name: str) -> list[str]:
        """Ids of the stored jobs whose schedules exclude calendar ``name``."""
        users: list[str] = []
        cursor: str | None = None
        while True:
            page = await self._jobs.list_jobs(JobQuery(limit=500, cursor=cursor))
            for stored in page.items:
                job = stored.job
                if any(n == name for _, n in calendars_used(job.schedule_config, job.schedules)):
                    users.append(stored.job_id)
            if page.next_cursor is None:
                return users
            cursor = page.next_cursor

    async def resolve(self, names: Iterable[str]) -> dict[str, BusinessCalendar]:
        """The calendars of ``names`` that exist, by name (none with a store that keeps
        no calendars)."""
        if not isinstance(self._store, CalendarStore):
            return {}
        store = self._store
        out: dict[str, BusinessCalendar] = {}
        for name in sorted(set(names)):
            found = await store.get_calendar(name)
            if found is not None:
                out[name] = found
        return out


def _parse(data: dict[str, Any]) -> BusinessCalendar:
    errors = calendar_problems(data)
    if errors:
        raise ConfigurationError(errors)
    return BusinessCalendar.from_dict(data)
