# callgate's gate in a small image: runtime dependencies only (no compilers, no dev
# tools), run as an unprivileged user, healthy while /readyz answers (the store is
# reachable). Build from the repository root:  docker build -t callgate .
#
# The image listens on 0.0.0.0, so its stack must have [[api.tokens]] (serve refuses to
# open an unauthenticated API beyond loopback). Mount the stack at /etc/callgate/stack.toml;
# a SQLite store lives in /var/lib/callgate (a volume), a Redis store is set with
# CALLGATE_STORE. `docker kill -s HUP` reloads the stack; `docker stop` (SIGTERM) drains.
# deploy/compose.yaml runs two of these on one Redis.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# Wheels for callgate and its runtime dependencies (with the Redis store), nothing else.
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[redis]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/callgate --create-home callgate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'callgate[redis]' \
    && rm -rf /wheels
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CALLGATE_CONFIG=/etc/callgate/stack.toml \
    CALLGATE_HOST=0.0.0.0 \
    CALLGATE_PORT=8080
USER callgate
WORKDIR /var/lib/callgate
VOLUME ["/var/lib/callgate"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CALLGATE_PORT', '8080'), timeout=2)" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["callgate"]
CMD ["serve", "--log-format", "json"]
