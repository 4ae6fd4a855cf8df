"""Business calendars (``/api/v2/calendars``): named holiday lists that schedules exclude.

``read`` to see them, ``admin`` to change them; deleting one that a stored job's schedule
excludes is a 409 naming the jobs.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.dependencies import JobAPIDep
from app.api.errors import problem_responses
from app.api.queries import NoQuery
from app.api.responses import operation_id
from app.api.schemas import Problem
from app.api.security import AdminKey, ReadKey
from app.domain.business_calendars import BusinessCalendar
from app.domain.errors import EngineNotRunningError
from app.domain.timeutil import utc_now
from app.engine.calendars import CalendarService

calendars_router = APIRouter(prefix="/api/v2", generate_unique_id_function=operation_id)

EXAMPLE_DATES_CALENDAR: dict[str, Any] = {
    "name": "uk-bank-holidays",
    "description": "England and Wales bank holidays, 2026",
    "dates": ["2026-12-25", "2026-12-28"],
}
EXAMPLE_COUNTRY_CALENDAR: dict[str, Any] = {"name": "uk", "country": "GB", "subdivision": "ENG"}

CalendarName = Annotated[
    str, Path(min_length=1, max_length=100, description="The calendar's name.")
]
_NEW_DATES = {"dates": ["2026-12-25", "2026-12-28", "2027-01-01"]}
_404 = {"model": Problem, "description": "No calendar with this name."}


class CalendarCreate(BaseModel):
    """A named business calendar: listed dates, a country's public holidays, or both. A
    business day is Monday to Friday and not one of its dates."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [EXAMPLE_DATES_CALENDAR, EXAMPLE_COUNTRY_CALENDAR]},
    )

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="Schedules name it in `exclude.calendar`.",
    )
    description: str = Field("", max_length=1000)
    dates: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Non-business dates, YYYY-MM-DD.",
        examples=[["2026-12-25", "2026-12-28"]],
    )
    country: str | None = Field(
        None,
        min_length=2,
        max_length=3,
        description="ISO 3166 country code whose public holidays (the `holidays` package, "
        "computed offline for any year) are non-business days.",
        examples=["GB"],
    )
    subdivision: str | None = Field(
        None, min_length=1, max_length=10, description="Its subdivision, e.g. ENG, SCT, NY."
    )


class CalendarUpdate(CalendarCreate):
    """A calendar's new definition (its name stays)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"dates": ["2026-12-25", "2026-12-28", "2027-01-01"]}]},
    )

    name: str | None = Field(  # type: ignore[assignment]
        None, description="Must be the name in the path if given."
    )


class CalendarRead(CalendarCreate):
    model_config = ConfigDict(extra="forbid", strict=False)

    upcoming: list[date] = Field(
        default_factory=list,
        description="Its non-business dates (weekends aside) in the next 366 days.",
    )

    @classmethod
    def of(cls, calendar: BusinessCalendar) -> CalendarRead:
        today = utc_now().date()
        return cls(
            **calendar.to_dict(),
            upcoming=calendar.holidays_between(today, today + timedelta(days=366)),
        )


async def get_calendars(api: JobAPIDep) -> CalendarService:
    if api.engine.jobs is None:
        raise EngineNotRunningError("this store keeps no job definitions")
    return api.engine.jobs.calendars


CalendarsDep = Annotated[CalendarService, Depends(get_calendars)]


@calendars_router.get(
    "/calendars",
    tags=["calendars"],
    summary="List business calendars",
    description="Every calendar, by name.",
    response_model=list[CalendarRead],
    responses=problem_responses(400, 500, 503),
)
async def list_calendars(_: ReadKey, calendars: CalendarsDep, query: NoQuery) -> list[CalendarRead]:
    return [CalendarRead.of(c) for c in await calendars.list_all()]


@calendars_router.post(
    "/calendars",
    tags=["calendars"],
    summary="Create a business calendar",
    description="From listed dates, a country (and subdivision) of the `holidays` package, or "
    "both. **409** when the name is taken.",
    status_code=201,
    response_model=CalendarRead,
    responses={
        409: {"model": Problem, "description": "A calendar has this name."},
        **problem_responses(400, 413, 500, 503),
    },
)
async def create_calendar(
    body: Annotated[
        CalendarCreate,
        Body(
            openapi_examples={
                "dates": {"summary": "Listed dates", "value": EXAMPLE_DATES_CALENDAR},
                "country": {"summary": "England's holidays", "value": EXAMPLE_COUNTRY_CALENDAR},
            }
        ),
    ],
    _: AdminKey,
    calendars: CalendarsDep,
    query: NoQuery,
) -> CalendarRead:
    return CalendarRead.of(await calendars.create(body.model_dump()))


@calendars_router.get(
    "/calendars/{name}",
    tags=["calendars"],
    summary="Get a business calendar",
    description="The calendar and its non-business dates of the next year.",
    response_model=CalendarRead,
    responses={404: _404, **problem_responses(400, 500, 503)},
)
async def get_calendar(
    name: CalendarName, _: ReadKey, calendars: CalendarsDep, query: NoQuery
) -> CalendarRead:
    return CalendarRead.of(await calendars.get(name))


@calendars_router.put(
    "/calendars/{name}",
    tags=["calendars"],
    summary="Replace a business calendar",
    description="The schedules that exclude it use the new dates from their next evaluation.",
    response_model=CalendarRead,
    responses={404: _404, **problem_responses(400, 413, 500, 503)},
)
async def replace_calendar(
    name: CalendarName,
    body: Annotated[
        CalendarUpdate,
        Body(openapi_examples={"dates": {"summary": "New dates", "value": _NEW_DATES}}),
    ],
    _: AdminKey,
    calendars: CalendarsDep,
    query: NoQuery,
) -> CalendarRead:
    return CalendarRead.of(await calendars.replace(name, body.model_dump()))


@calendars_router.delete(
    "/calendars/{name}",
    tags=["calendars"],
    summary="Delete a business calendar",
    description="**409** while a stored job's schedule excludes it (the problem names the jobs).",
    status_code=204,
    response_class=Response,
    responses={
        404: _404,
        409: {"model": Problem, "description": "A stored job's schedule uses it."},
        **problem_responses(400, 500, 503),
    },
)
async def delete_calendar(
    name: CalendarName, _: AdminKey, calendars: CalendarsDep, query: NoQuery
) -> Response:
    await calendars.delete(name)
    return Response(status_code=204)
