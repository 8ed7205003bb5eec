# amlwire operator image (the operator only: the Azure sandbox and the dev environment are left out): `docker build -t ghcr.io/amlwire/amlwire:0.1.0 .`
# BASE_IMAGE: any image with Python 3.11 and its venv module (the node tests build on a local Debian 12 root).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS build
# an index mirror, or a folder of wheels with PIP_NO_INDEX=1 (the node tests build with no index at all)
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
# the operator package only: the sandbox and the dev environment are packages of their own, left out
COPY operator/amlwire ./operator/amlwire
RUN python3 -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --no-compile -c constraints.txt . \
 && /venv/bin/python -m compileall -q /venv/lib

FROM ${BASE_IMAGE}
# The chart runs it with runAsUser 10001 and a read-only root filesystem (/tmp is an emptyDir).
RUN groupadd --gid 10001 amlwire && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin amlwire
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["amlwire"]
CMD ["run"]
