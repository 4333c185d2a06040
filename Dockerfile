# The production image: web server, worker and beat. Built from the locked
# requirements (every transitive dependency pinned, with hashes). Tests,
# benchmarks, docs and scripts stay out through .dockerignore; the Sabito simulator
# and the demo through the `app` stage, and only the `demo` target adds them back
# (docker-compose.yml's `--profile demo`). `docker build .` gives `production`.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.lock .
RUN pip install --require-hashes --no-deps -r requirements.lock \
    && useradd --create-home --uid 1000 nexpro

# The source less the simulator and the demo, in a stage of its own so that not even
# a lower layer of the production image holds them.
FROM base AS source
COPY . /src
RUN rm -r /src/sabito_simulator \
          /src/nexpro/management/commands/sabito_simulator.py \
          /src/nexpro/management/commands/sabito_demo.py

FROM base AS app
COPY --from=source /src /app
RUN python manage.py collectstatic --noinput --verbosity 0 \
    && mkdir -p var && chown -R nexpro /app/var
USER nexpro
# The probes' own port (gunicorn.conf.py, nexpro/probes.py): answered by every web
# worker from a thread of its own, never behind API requests.
ENV GUNICORN_PROBE_BIND=0.0.0.0:8081
EXPOSE 8000 8081
# Liveness of the web server. The worker and beat services of docker-compose.yml
# replace it with checks of their own.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=4)"]
CMD ["gunicorn", "nexpro.wsgi", "-c", "gunicorn.conf.py", "--bind", "0.0.0.0:8000"]

FROM app AS demo
COPY sabito_simulator sabito_simulator/
COPY nexpro/management/commands/sabito_simulator.py nexpro/management/commands/sabito_demo.py nexpro/management/commands/

FROM app AS production
