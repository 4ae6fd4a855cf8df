"""The ``CalendarStore`` port (business calendars, ``calendars_v2``) of ``SqlExecutionStore``.

Kept apart from the execution history and the job definitions to keep modules small;
``SqlExecutionStore`` mixes it in. A calendar row holds its definition as JSON (the listed
dates, or a country and subdivision whose holidays the ``holidays`` package computes); every
call is one short transaction.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy import String, Text, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.domain.business_calendars import BusinessCalendar, CalendarExistsError
from app.domain.timeutil import utc_now
from app.persistence.models import Base


class CalendarDefinitionV2(Base):
    """A named business calendar; ``definition_json`` is ``BusinessCalendar.to_dict()``."""

    __tablename__ = "calendars_v2"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    definition_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CalendarRepository:
    """Rows of ``calendars_v2``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert(self, name: str, definition_json: str) -> None:
        """Insert a row; IntegrityError when the name exists."""
        now = utc_now()
        await self.session.execute(
            insert(CalendarDefinitionV2).values(
                name=name, definition_json=definition_json, created_at=now, updated_at=now
            )
        )

    async def get(self, name: str) -> CalendarDefinitionV2 | None:
        return await self.session.get(CalendarDefinitionV2, name)

    async def all(self) -> list[CalendarDefinitionV2]:
        stmt = select(CalendarDefinitionV2).order_by(CalendarDefinitionV2.name)
        return list((await self.session.scalars(stmt)).all())

    async def update(self, name: str, definition_json: str) -> bool:
        stmt = (
            update(CalendarDefinitionV2)
            .where(CalendarDefinitionV2.name == name)
            .values(definition_json=definition_json, updated_at=utc_now())
        )
        return bool((await self.session.execute(stmt)).rowcount)  # type: ignore[attr-defined]

    async def delete(self, name: str) -> bool:
        stmt = delete(CalendarDefinitionV2).where(CalendarDefinitionV2.name == name)
        return bool((await self.session.execute(stmt)).rowcount)  # type: ignore[attr-defined]


def _calendar(row: CalendarDefinitionV2) -> BusinessCalendar:
    return BusinessCalendar.from_dict(json.loads(row.definition_json))


class SqlCalendarStoreMixin:
    """Business calendars in ``calendars_v2``."""

    def _read(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError  # provided by SqlExecutionStore

    def _write(self) -> AbstractAsyncContextManager[AsyncSession]:
        raise NotImplementedError  # provided by SqlExecutionStore

    async def get_calendar(self, name: str) -> BusinessCalendar | None:
        async with self._read() as session:
            row = await CalendarRepository(session).get(name)
            return _calendar(row) if row is not None else None

    async def list_calendars(self) -> list[BusinessCalendar]:
        async with self._read() as session:
            return [_calendar(row) for row in await CalendarRepository(session).all()]

    async def create_calendar(self, calendar: BusinessCalendar) -> None:
        try:
            async with self._write() as session:
                await CalendarRepository(session).insert(
                    calendar.name, json.dumps(calendar.to_dict())
                )
        except IntegrityError:
            raise CalendarExistsError(calendar.name) from None

    async def replace_calendar(self, calendar: BusinessCalendar) -> bool:
        async with self._write() as session:
            return await CalendarRepository(session).update(
                calendar.name, json.dumps(calendar.to_dict())
            )

    async def delete_calendar(self, name: str) -> bool:
        async with self._write() as session:
            return await CalendarRepository(session).delete(name)
