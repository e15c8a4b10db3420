# shears: the model-pruning service and batch CLI in one image.
#
#   docker build -t shears:0.1.0 .
#   docker run -p 8080:8080 -v shears-data:/data shears:0.1.0
#   docker run --rm -v "$PWD/models:/models" shears:0.1.0 \
#     prune --model /models/in --out /models/out --method magnitude --pattern 2:4
#
# Both stages install their packages with scripts/deps.sh, the one list of
# packages (--build: what compiling needs; --runtime: the shared libraries
# the binary links, plus curl for the HEALTHCHECK). Checked offline by
# scripts/check_image.sh.

# --- build stage: compile build/shears
FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/deps.sh scripts/deps.sh
RUN scripts/deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make -j"$(nproc)" \
 && install -m 0755 build/shears /usr/local/bin/shears \
 && /usr/local/bin/shears version

# --- runtime stage: the binary and its runtime libraries, nothing else
FROM debian:bookworm-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="shears" \
      org.opencontainers.image.description="Model-pruning HTTP service and batch CLI (shears serve | prune | inspect | eval)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"

COPY scripts/deps.sh /usr/local/lib/shears/deps.sh
RUN /usr/local/lib/shears/deps.sh --runtime \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 shears \
 && useradd --uid 10001 --gid shears --create-home --home-dir /home/shears \
      --shell /usr/sbin/nologin shears \
 && mkdir -p /data \
 && chown shears:shears /data

COPY --from=build /usr/local/bin/shears /usr/local/bin/shears

# The data dir (SQLite database, blobs, tmp) is the only state: a local
# filesystem with one writer.
VOLUME /data
WORKDIR /data
ENV SHEARS_LISTEN=0.0.0.0:8080 \
    SHEARS_DATA_DIR=/data
EXPOSE 8080

# Liveness only (/healthz touches neither the database nor the disk).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

USER shears
# shears is PID 1: on SIGTERM it stops taking jobs, gives running ones
# SHEARS_GRACE seconds, puts the rest back in the queue and exits 0.
ENTRYPOINT ["shears"]
CMD ["serve"]
