# Job Scheduler V2 — production image (PowerShell 7 included for powershell steps; unixODBC and
# FreeTDS for SQL Server connections, mssql+aioodbc://...?driver=FreeTDS).
# Build: docker build -t jobscheduler-v2 .
# Run:   docker run -p 8000:8000 -v jsv2-data:/srv/data jobscheduler-v2
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://packages.microsoft.com/config/debian/12/packages-microsoft-prod.deb -o /tmp/ms.deb \
 && dpkg -i /tmp/ms.deb && rm /tmp/ms.deb \
 && apt-get update && apt-get install -y --no-install-recommends powershell unixodbc tdsodbc \
 && apt-get purge -y curl gnupg && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
RUN useradd --system --create-home --home-dir /srv --uid 10001 scheduler
WORKDIR /srv
COPY alembic.ini ./
COPY migrations ./migrations
RUN mkdir -p /srv/data && chown scheduler /srv/data
USER scheduler
# Listening beyond loopback requires API keys: pass V2_API_KEYS (or V2_API_KEYS_FILE).
ENV V2_HOST=0.0.0.0 \
    V2_PORT=8000 \
    V2_DATABASE_URL=sqlite+aiosqlite:////srv/data/jobscheduler.db \
    V2_POWERSHELL_EXECUTABLE=pwsh \
    PYTHONUNBUFFERED=1
VOLUME ["/srv/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"
CMD ["python", "-m", "app"]
