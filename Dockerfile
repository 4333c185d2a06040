FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
RUN python manage.py collectstatic --noinput --verbosity 0 \
    && useradd --create-home --uid 1000 nexpro \
    && mkdir -p var && chown -R nexpro /app/var
USER nexpro

EXPOSE 8000
CMD ["gunicorn", "nexpro.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--access-logfile", "-"]
