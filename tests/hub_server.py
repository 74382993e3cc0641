"""A small local Hugging Face Hub server for tests, plus the ``hub_server`` pytest fixture.

The machine running the tests has no internet, yet the library must be tested against the *real*
``huggingface_hub`` client (``create_repo``, ``upload_folder``, ``hf_hub_download``, ``snapshot_download``,
``model.push_to_hub``, ``from_pretrained``...).  :class:`LocalHub` speaks just enough of the Hub HTTP
protocol, as used by ``huggingface_hub`` 2.x, for that client to work unmodified once ``HF_ENDPOINT``
points at it.

Design notes (all taken from reading the installed client, not guessed):

* Everything is kept in memory.  A repo is a set of commits (``sha -> {path: bytes}``, a full snapshot
  per commit) plus refs (branches, tags, ``refs/pr/N``).  Every commit gets a fresh 40-hex sha and moves
  its branch, so a ``revision=<old sha>`` download keeps serving the old bytes.
* Like the real Hub, creating a repo makes an initial commit holding a ``.gitattributes`` file, so
  ``snapshot_download`` and ``list_repo_files`` see it too.
* ``preupload`` answers ``"uploadMode": "regular"`` for every file, so no LFS/Xet transfer is ever
  needed: file bytes travel base64-encoded inside the NDJSON commit payload.  The env from
  :meth:`LocalHub.endpoint_env` also sets ``HF_HUB_DISABLE_XET=1`` so ``upload_folder`` takes the plain
  ``create_commit`` path even where ``hf_xet`` is installed.
* Misses carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``): the client
  maps errors from that header, not from the status code alone.
* Unknown routes answer 404 with a message naming the route (and are recorded in ``hub.errors``);
  server bugs answer 501 rather than 500 because the client retries 5xx codes with back-off.

``huggingface_hub`` reads ``HF_ENDPOINT`` once, at import time, so client code is meant to run in a
subprocess started with :func:`run_client` and the env from :meth:`LocalHub.endpoint_env`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

__all__ = ["ClientError", "HubError", "LocalHub", "hub_server", "run_client"]

REPO_TYPES = ("model", "dataset", "space")
_PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
# URL prefix of non-model repos in web/resolve URLs (models have none).
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Path segments that follow a repo id in `/api/{type}s/{repo_id}/...` routes.
_API_ACTIONS = frozenset(
    {"revision", "tree", "preupload", "commit", "commits", "paths-info", "refs", "branch", "tag", "settings"}
)

DEFAULT_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
    b"*.h5 filter=lfs diff=lfs merge=lfs -text\n"
    b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pt filter=lfs diff=lfs merge=lfs -text\n"
    b"*.pth filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.zip filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_oid(data: bytes) -> str:
    """Git blob sha1 of ``data``: what the Hub reports as a regular file's ``oid``/``ETag``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now_iso() -> str:
    """Timestamp in the exact format the client's ``parse_datetime`` expects."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An error answered to the client: HTTP status, optional ``X-Error-Code`` and a message."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}  # extra JSON body fields


@dataclass
class Commit:
    """One immutable revision: the full file snapshot, so old revisions stay downloadable."""

    sha: str
    parent: str | None
    title: str
    message: str
    files: dict[str, bytes]
    date: str = field(default_factory=_now_iso)


@dataclass
class Repo:
    """A repo: its commits by sha and its refs (``branches``/``tags``/``prs`` map a name to a sha)."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """Commit for a branch, tag, ``refs/pr/N`` or full sha; ``RevisionNotFound`` otherwise."""
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision.startswith("refs/pr/") and revision[8:].isdigit():
            sha = self.prs.get(int(revision[8:]))
        if sha is None and revision in self.commits:
            sha = revision
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[sha]


def _split(path: str) -> list[str]:
    """Split a raw URL path into unquoted segments (split first: revisions are quoted with ``safe=""``)."""
    return [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []


class LocalHub:
    """In-memory Hub-protocol server on ``127.0.0.1`` (ephemeral port), served from a daemon thread.

    Use as a context manager or with :meth:`start`/:meth:`stop`.  Point the client at it with the env from
    :meth:`endpoint_env`.  The storage helpers (:meth:`read_file`, :meth:`write_file`, ...) bypass HTTP, for
    tests that need to inspect or tamper with a repo behind the client's back.
    """

    def __init__(self, user: str = "user", page_size: int = 1000, verbose: bool = False) -> None:
        self.user = user
        self.page_size = page_size  # tree/commits listing page size (the real Hub uses 1000)
        self._default_page_size = page_size
        self.verbose = verbose  # log every request to stderr, not only failures
        self.hf_home: Path | None = None  # set by the fixture per test; else a private temp dir
        self.request_log: list[tuple[str, str, int]] = []
        self.errors: list[str] = []  # unknown routes and server-side exceptions
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalHub:
        """Bind an ephemeral port and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        hub = self

        class Handler(_HubRequestHandler):
            pass

        Handler.hub = hub
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="LocalHub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._httpd = None
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, to be used as ``HF_ENDPOINT`` (no trailing slash)."""
        if self._httpd is None:
            raise RuntimeError("LocalHub is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self, hf_home: str | Path | None = None) -> None:
        """Forget all repos, logs and per-test settings (per-test isolation on a shared server)."""
        with self._lock:
            self.page_size = self._default_page_size
            self._repos.clear()
            self.request_log.clear()
            self.errors.clear()
        self.hf_home = Path(hf_home) if hf_home is not None else None

    def endpoint_env(self) -> dict[str, str]:
        """Env vars that point a fresh ``huggingface_hub``/``transformers`` process at this server.

        ``HF_HUB_CACHE`` & co are set explicitly too, since a parent env may override ``HF_HOME``'s default.
        """
        if self.hf_home is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="localhub-hf-home-")
            self.hf_home = Path(self._tmp.name)
        home = Path(self.hf_home)
        home.mkdir(parents=True, exist_ok=True)
        no_proxy = ",".join(x for x in ("127.0.0.1", "localhost", os.environ.get("NO_PROXY", "")) if x)
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": "hf_local_test_token",
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HF_MODULES_CACHE": str(home / "modules"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    def run(self, code: str, timeout: float = 180, cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run client ``code`` in a subprocess pointed at this hub (see :func:`run_client`)."""
        return run_client(code, self.endpoint_env(), timeout=timeout, cwd=cwd)

    # ------------------------------------------------------------------ storage helpers (no HTTP)
    def _new_sha(self, *parts: object) -> str:
        payload = json.dumps([next(self._counter), id(self), *map(str, parts)]).encode()
        return hashlib.sha1(payload).hexdigest()

    def _repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def repo_url(self, repo_id: str, repo_type: str = "model") -> str:
        """Web URL of a repo, as the real Hub formats it (``RepoUrl`` parses the id back from it)."""
        return f"{self.url}/{_URL_PREFIX[repo_type]}{repo_id}"

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        """Create a repo with an initial ``.gitattributes`` commit on ``main``; 409 if it exists."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise HubError(409, f"You already created this {repo_type} repo", None)
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now_iso())
            sha = self._new_sha(repo_type, repo_id, "initial")
            repo.commits[sha] = Commit(sha, None, "initial commit", "", {".gitattributes": DEFAULT_GITATTRIBUTES})
            repo.branches["main"] = sha
            self._repos[(repo_type, repo_id)] = repo
            return repo

    def delete_repo(self, repo_id: str, repo_type: str = "model") -> None:
        """Remove a repo; ``RepoNotFound`` if absent."""
        with self._lock:
            self._repo(repo_id, repo_type)
            del self._repos[(repo_type, repo_id)]

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        """Commit sha that ``revision`` currently points to."""
        with self._lock:
            return self._repo(repo_id, repo_type).resolve(revision).sha

    def commits(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """Commit shas reachable from ``revision``, newest first (the initial commit last)."""
        with self._lock:
            repo = self._repo(repo_id, repo_type)
            commit: Commit | None = repo.resolve(revision)
            out = []
            while commit is not None:
                out.append(commit.sha)
                commit = repo.commits[commit.parent] if commit.parent else None
            return out

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """Sorted file paths at ``revision``."""
        with self._lock:
            return sorted(self._repo(repo_id, repo_type).resolve(revision).files)

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        """Bytes of ``path`` at ``revision``, straight from storage; ``FileNotFoundError`` if absent."""
        with self._lock:
            files = self._repo(repo_id, repo_type).resolve(revision).files
            if path not in files:
                raise FileNotFoundError(f"{path} not in {repo_type} {repo_id}@{revision}")
            return files[path]

    def write_file(
        self,
        repo_id: str,
        path: str,
        data: bytes | str,
        revision: str = "main",
        repo_type: str = "model",
        message: str | None = None,
    ) -> str:
        """Add/overwrite ``path`` in a new commit on branch ``revision`` (e.g. to tamper with a repo); returns the sha."""
        content = data.encode() if isinstance(data, str) else bytes(data)
        return self.commit(repo_id, {path: content}, revision=revision, repo_type=repo_type, title=message)

    def delete_file(
        self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model", message: str | None = None
    ) -> str:
        """Delete ``path`` in a new commit on branch ``revision``; returns the sha."""
        return self.commit(repo_id, {path: None}, revision=revision, repo_type=repo_type, title=message)

    def commit(
        self,
        repo_id: str,
        changes: Mapping[str, bytes | None],
        revision: str = "main",
        repo_type: str = "model",
        title: str | None = None,
        description: str = "",
        parent_commit: str | None = None,
        deleted_folders: tuple[str, ...] = (),
    ) -> str:
        """Apply ``changes`` (``None`` deletes a file) on top of branch ``revision`` as one new commit."""
        with self._lock:
            repo = self._repo(repo_id, repo_type)
            base = repo.resolve(revision)
            is_pr = revision.startswith("refs/pr/")
            if revision not in repo.branches and not is_pr:
                raise HubError(400, f"Invalid rev id: {revision} is not a branch; commits must target a branch")
            if parent_commit is not None and parent_commit != base.sha:
                raise HubError(412, f"A commit has happened since. Please refresh and try again. ({base.sha})")
            files = dict(base.files)
            for folder in deleted_folders:
                prefix = folder.strip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {folder}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            for path, content in changes.items():
                if content is None:
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                else:
                    files[path] = content
            sha = self._new_sha(repo_type, repo_id, base.sha, title)
            repo.commits[sha] = Commit(sha, base.sha, title or f"Update {len(changes)} file(s)", description, files)
            if is_pr:
                repo.prs[int(revision[8:])] = sha
            else:
                repo.branches[revision] = sha
            return sha

    # ------------------------------------------------------------------ request log
    def _log(self, method: str, path: str, status: int, problem: str | None = None) -> None:
        with self._lock:
            self.request_log.append((method, path, status))
            if problem is not None:
                self.errors.append(f"{method} {path} -> {status}: {problem}")
        if problem is not None or self.verbose:
            print(f"[LocalHub] {method} {path} -> {status}" + (f": {problem}" if problem else ""), file=sys.stderr)


# ---------------------------------------------------------------------- HTTP layer
@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


class _HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one request to the :class:`LocalHub` it belongs to (set as a class attribute by ``start``)."""

    hub: LocalHub
    protocol_version = "HTTP/1.1"  # keep-alive: the client pools connections
    timeout = 30  # idle keep-alive connections end, so handler threads do not linger
    server_version = "LocalHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the default per-request stderr line; :meth:`LocalHub._log` records requests instead."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _read_body(self) -> bytes:
        """Read the whole request body first, so a keep-alive connection never holds stray bytes."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        body = self._read_body()
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        problem = None
        try:
            resp = _route(self.hub, method, split.path, query, body, self.headers)
        except HubError as err:
            payload = {"error": err.message, **err.extra}
            headers = dict(err.headers)
            headers["X-Error-Message"] = err.message.replace("\n", " ")[:500]
            if err.code:
                headers["X-Error-Code"] = err.code
            resp = _Response.json(payload, err.status, headers)
            if err.code is None and err.status == 404:
                problem = err.message  # unknown route: make it loud
        except Exception as exc:  # a server bug: answer 501 (not retried by the client, unlike 500)
            problem = "".join(traceback.format_exception(exc))
            resp = _Response.json({"error": f"LocalHub internal error: {exc!r}"}, 501)
        self.hub._log(method, self.path, resp.status, problem)
        self.send_response(resp.status)
        resp.headers.setdefault("Content-Length", str(len(resp.body)))
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD" and resp.body:
            self.wfile.write(resp.body)


def _route(hub: LocalHub, method: str, path: str, query: dict[str, str], body: bytes, headers: Any) -> _Response:
    """Dispatch a request; raise :class:`HubError` for client-visible errors."""
    seg = _split(path)
    if seg[:1] == ["api"]:
        if seg == ["api", "whoami-v2"] and method == "GET":
            return _whoami(hub)
        if seg == ["api", "validate-yaml"] and method == "POST":
            return _validate_yaml(body)
        if seg == ["api", "repos", "create"] and method == "POST":
            return _create_repo(hub, json.loads(body or b"{}"))
        if seg == ["api", "repos", "delete"] and method == "DELETE":
            payload = json.loads(body or b"{}")
            repo_type = payload.get("type") or "model"
            with hub._lock:
                hub.delete_repo(_full_id(hub, payload), repo_type)
            return _Response.json({})
        if len(seg) >= 3 and seg[1] in _PLURAL_TO_TYPE:
            return _api_repo(hub, method, _PLURAL_TO_TYPE[seg[1]], seg[2:], query, body)
    else:
        repo_type = "model"
        if seg[:1] and seg[0] in ("datasets", "spaces"):
            repo_type, seg = _PLURAL_TO_TYPE[seg[0]], seg[1:]
        # `{repo_id}/resolve/{revision}/{path}`, repo_id being `ns/name` (or a legacy single name)
        for i in (2, 1):
            if len(seg) > i + 2 and seg[i] in ("resolve", "raw") and method in ("GET", "HEAD"):
                return _resolve(hub, repo_type, "/".join(seg[:i]), seg[i + 1], "/".join(seg[i + 2 :]), headers)
    raise HubError(404, f"LocalHub: no route for {method} {path} (not implemented by tests/hub_server.py)")


def _full_id(hub: LocalHub, payload: dict[str, Any]) -> str:
    """``organization/name`` from a create/delete payload; no organization means the token's user."""
    return f"{payload.get('organization') or hub.user}/{payload['name']}"


def _whoami(hub: LocalHub) -> _Response:
    return _Response.json(
        {
            "type": "user",
            "id": "0" * 24,
            "name": hub.user,
            "fullname": "Local Test User",
            "email": f"{hub.user}@example.com",
            "emailVerified": True,
            "isPro": False,
            "canPay": False,
            "avatarUrl": "",
            "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
        }
    )


def _validate_yaml(body: bytes) -> _Response:
    """Check a README's YAML front matter like the Hub does: 400 + ``errors`` if it does not parse."""
    import yaml

    content = json.loads(body or b"{}").get("content", "")
    lines = content.splitlines()
    if lines and lines[0].strip() == "---":
        try:
            end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
            meta = yaml.safe_load("\n".join(lines[1:end]))
            if meta is not None and not isinstance(meta, dict):
                raise ValueError("metadata must be a YAML mapping")
        except Exception as exc:  # StopIteration (unterminated) or YAML error
            message = f"Invalid YAML metadata: {exc!r}"
            return _Response.json({"errors": [{"message": message}], "warnings": []}, 400)
    return _Response.json({"errors": [], "warnings": []})


def _create_repo(hub: LocalHub, payload: dict[str, Any]) -> _Response:
    repo_type = payload.get("type") or "model"
    if repo_type not in REPO_TYPES:
        raise HubError(400, f"Invalid repo type: {repo_type}")
    repo_id = _full_id(hub, payload)
    private = payload.get("private") or payload.get("visibility") == "private"
    try:
        hub.create_repo(repo_id, repo_type, private=bool(private))
    except HubError as err:
        # The client's `exist_ok=True` swallows the 409 and then still reads `url` from this body.
        err.extra["url"] = hub.repo_url(repo_id, repo_type)
        raise
    return _Response.json({"url": hub.repo_url(repo_id, repo_type), "name": repo_id, "id": repo_id})


def _split_repo(rest: list[str]) -> tuple[str, list[str]]:
    """``[ns, name, action, ...]`` -> (``ns/name``, ``[action, ...]``); a legacy single-name id if seg 1 is an action."""
    if len(rest) >= 2 and rest[1] not in _API_ACTIONS:
        return f"{rest[0]}/{rest[1]}", rest[2:]
    return rest[0], rest[1:]


def _api_repo(
    hub: LocalHub, method: str, repo_type: str, rest: list[str], query: dict[str, str], body: bytes
) -> _Response:
    """Routes under ``/api/{type}s/{repo_id}``."""
    repo_id, action = _split_repo(rest)
    with hub._lock:
        repo = hub._repo(repo_id, repo_type)
        if not action and method == "GET":
            return _repo_info(hub, repo, repo.resolve("main"), query)
        verb = action[0] if action else ""
        arg = "/".join(action[1:])
        if verb == "revision" and method == "GET" and arg:
            return _repo_info(hub, repo, repo.resolve(arg), query)
        if verb == "tree" and method == "GET" and len(action) >= 2:
            return _tree(hub, repo, action[1], "/".join(action[2:]), query)
        if verb == "paths-info" and method == "POST" and arg:
            return _paths_info(repo, arg, body)
        if verb == "preupload" and method == "POST" and arg:
            return _preupload(repo, arg, json.loads(body or b"{}"), query)
        if verb == "commit" and method == "POST" and arg:
            return _commit(hub, repo, arg, body, query)
        if verb == "commits" and method == "GET" and arg:
            return _list_commits(hub, repo, arg, query)
        if verb == "refs" and method == "GET" and not arg:
            return _refs(repo)
        if verb == "branch" and arg and method in ("POST", "DELETE"):
            return _branch(repo, method, arg, json.loads(body or b"{}"))
        if verb == "tag" and arg and method in ("POST", "DELETE"):
            return _tag(repo, method, arg, json.loads(body or b"{}"))
        if verb == "settings" and method == "PUT":
            payload = json.loads(body or b"{}")
            if "private" in payload:
                repo.private = bool(payload["private"])
            return _Response.json({})
    raise HubError(404, f"LocalHub: no route for {method} /api/{repo_type}s/{repo_id}/{'/'.join(action)}")


def _sibling(path: str, data: bytes, blobs: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"rfilename": path}
    if blobs:
        entry.update(size=len(data), blobId=git_blob_oid(data))
    return entry


def _repo_info(hub: LocalHub, repo: Repo, commit: Commit, query: dict[str, str]) -> _Response:
    """``GET /api/{type}s/{id}[/revision/{rev}]``: what ``repo_info``/``model_info`` parse."""
    blobs = query.get("blobs", "").lower() in ("1", "true")
    info: dict[str, Any] = {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
        "sha": commit.sha,
        "lastModified": commit.date,
        "createdAt": repo.created_at,
        "private": repo.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [_sibling(p, d, blobs) for p, d in sorted(commit.files.items())],
    }
    if repo.repo_type == "model":
        info.update(library_name=None, pipeline_tag=None, modelId=repo.repo_id)
    if repo.repo_type == "space":
        info.update(sdk="static", runtime={"stage": "NO_APP_FILE", "hardware": {"current": None}})
    return _Response.json(info)


def _file_entry(path: str, data: bytes) -> dict[str, Any]:
    return {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": path}


def _dir_entry(path: str) -> dict[str, Any]:
    return {"type": "directory", "oid": hashlib.sha1(f"tree {path}".encode()).hexdigest(), "size": 0, "path": path}


def _tree_entries(files: dict[str, bytes], base: str, recursive: bool) -> list[dict[str, Any]]:
    """Entries under folder ``base`` ("" = root), folders listed like the Hub does (as ``directory``)."""
    prefix = base.strip("/") + "/" if base.strip("/") else ""
    entries: dict[str, dict[str, Any]] = {}
    for path, data in sorted(files.items()):
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        for depth in range(1, len(parts)):
            if not recursive and depth > 1:
                break
            folder = prefix + "/".join(parts[:depth])
            entries.setdefault(folder, _dir_entry(folder))
        if recursive or len(parts) == 1:
            entries[path] = _file_entry(path, data)
    return sorted(entries.values(), key=lambda e: (e["type"] != "directory", e["path"]))


def _paginated(hub: LocalHub, items: list[Any], query: dict[str, str], url: str) -> _Response:
    """One page of ``items`` with a GitHub-style ``Link: <...>; rel="next"`` header, as the client follows."""
    start = int(query.get("cursor") or 0)
    page = items[start : start + hub.page_size]
    headers = {}
    if start + hub.page_size < len(items):
        params = {k: v for k, v in query.items() if k != "cursor"}
        params["cursor"] = str(start + hub.page_size)
        qs = "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items())
        headers["Link"] = f'<{url}?{qs}>; rel="next"'
    return _Response.json(page, headers=headers)


def _tree(hub: LocalHub, repo: Repo, revision: str, base: str, query: dict[str, str]) -> _Response:
    """``GET /api/{type}s/{id}/tree/{rev}[/{path}]?recursive=...``: what ``list_repo_tree`` and ``snapshot_download`` use."""
    commit = repo.resolve(revision)
    recursive = query.get("recursive", "").lower() in ("1", "true")
    if base.strip("/") and not any(p.startswith(base.strip("/") + "/") for p in commit.files):
        raise HubError(404, f"Entry not found: {base}", "EntryNotFound")
    entries = _tree_entries(commit.files, base, recursive)
    url = f"{hub.url}/api/{repo.repo_type}s/{repo.repo_id}/tree/{quote(revision, safe='')}"
    if base:
        url += "/" + quote(base, safe="")
    return _paginated(hub, entries, query, url)


def _paths_info(repo: Repo, revision: str, body: bytes) -> _Response:
    """``POST /api/{type}s/{id}/paths-info/{rev}`` (form-encoded ``paths``): unknown paths are skipped."""
    commit = repo.resolve(revision)
    form = parse_qs(body.decode(), keep_blank_values=True)
    out = []
    for path in form.get("paths", []):
        path = path.strip("/")
        if path in commit.files:
            out.append(_file_entry(path, commit.files[path]))
        elif any(p.startswith(path + "/") for p in commit.files):
            out.append(_dir_entry(path))
    return _Response.json(out)


def _preupload(repo: Repo, revision: str, payload: dict[str, Any], query: dict[str, str]) -> _Response:
    """Every file is ``regular`` (inline base64 in the commit), so no LFS/Xet upload is ever attempted.

    ``oid`` of the existing file lets the client drop unchanged files from the commit, as on the real Hub.
    """
    create_pr = query.get("create_pr") == "1"
    try:
        commit = repo.resolve(revision)
    except HubError:
        if not create_pr:
            raise
        commit = repo.resolve("main")
    files = []
    for entry in payload.get("files", []):
        existing = commit.files.get(entry["path"])
        files.append(
            {
                "path": entry["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_oid(existing) if existing is not None else None,
            }
        )
    return _Response.json({"files": files, "commitOid": commit.sha})


def _commit(hub: LocalHub, repo: Repo, revision: str, body: bytes, query: dict[str, str]) -> _Response:
    """``POST /api/{type}s/{id}/commit/{rev}``: NDJSON ``header`` / ``file`` / ``deletedFile`` / ``deletedFolder`` lines."""
    header: dict[str, Any] = {}
    changes: dict[str, bytes | None] = {}
    folders: list[str] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        key, value = item.get("key"), item.get("value", {})
        if key == "header":
            header = value
        elif key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"Unsupported file encoding: {value.get('encoding')}")
            changes[value["path"]] = base64.b64decode(value["content"])
        elif key == "deletedFile":
            changes[value["path"]] = None
        elif key == "deletedFolder":
            folders.append(value["path"])
        elif key == "lfsFile":
            raise HubError(
                400, f"LocalHub stores no LFS objects (lfsFile {value.get('path')!r}); preupload says regular"
            )
        else:
            raise HubError(400, f"Unknown commit operation key: {key!r}")
    pr_url = None
    if query.get("create_pr") == "1":
        base = repo.resolve(revision)
        num = max(repo.prs, default=0) + 1
        repo.prs[num] = base.sha
        revision = f"refs/pr/{num}"
        pr_url = f"{hub.repo_url(repo.repo_id, repo.repo_type)}/discussions/{num}"
    sha = hub.commit(
        repo.repo_id,
        changes,
        revision=revision,
        repo_type=repo.repo_type,
        title=header.get("summary"),
        description=header.get("description", ""),
        parent_commit=header.get("parentCommit"),
        deleted_folders=tuple(folders),
    )
    return _Response.json(
        {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{hub.repo_url(repo.repo_id, repo.repo_type)}/commit/{sha}",
            "pullRequestUrl": pr_url,
        }
    )


def _list_commits(hub: LocalHub, repo: Repo, revision: str, query: dict[str, str]) -> _Response:
    """``GET /api/{type}s/{id}/commits/{rev}``: history, newest first (``list_repo_commits``)."""
    items = []
    for sha in hub.commits(repo.repo_id, revision, repo.repo_type):
        c = repo.commits[sha]
        items.append(
            {"id": sha, "title": c.title, "message": c.message, "authors": [{"user": hub.user}], "date": c.date}
        )
    url = f"{hub.url}/api/{repo.repo_type}s/{repo.repo_id}/commits/{quote(revision, safe='')}"
    return _paginated(hub, items, query, url)


def _refs(repo: Repo) -> _Response:
    """``GET /api/{type}s/{id}/refs`` (``list_repo_refs``)."""

    def ref(name: str, full: str, sha: str) -> dict[str, str]:
        return {"name": name, "ref": full, "targetCommit": sha}

    return _Response.json(
        {
            "branches": [ref(n, f"refs/heads/{n}", s) for n, s in repo.branches.items()],
            "tags": [ref(n, f"refs/tags/{n}", s) for n, s in repo.tags.items()],
            "converts": [],
            "pullRequests": [ref(f"refs/pr/{n}", f"refs/pr/{n}", s) for n, s in repo.prs.items()],
        }
    )


def _branch(repo: Repo, method: str, name: str, payload: dict[str, Any]) -> _Response:
    """Create (409 if it exists) or delete a branch."""
    if method == "DELETE":
        if name == "main":
            raise HubError(403, "Cannot delete the main branch")
        if name not in repo.branches:
            raise HubError(404, f"Branch not found: {name}", "RevisionNotFound")
        del repo.branches[name]
    else:
        if name in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{name}")
        repo.branches[name] = repo.resolve(payload.get("startingPoint") or "main").sha
    return _Response.json({})


def _tag(repo: Repo, method: str, revision_or_tag: str, payload: dict[str, Any]) -> _Response:
    """``POST .../tag/{revision}`` with ``{"tag": ...}`` creates; ``DELETE .../tag/{tag}`` deletes."""
    if method == "DELETE":
        if revision_or_tag not in repo.tags:
            raise HubError(404, f"Tag not found: {revision_or_tag}", "RevisionNotFound")
        del repo.tags[revision_or_tag]
    else:
        tag = payload["tag"]
        if tag in repo.tags:
            raise HubError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = repo.resolve(revision_or_tag).sha
    return _Response.json({})


def _resolve(hub: LocalHub, repo_type: str, repo_id: str, revision: str, path: str, headers: Any) -> _Response:
    """``HEAD``/``GET /{id}/resolve/{rev}/{path}``: bytes + ``X-Repo-Commit`` + ``ETag`` (git blob oid) + length.

    No ``X-Linked-*``/``X-Xet-*`` headers: files are served as plain git blobs.  ``Range: bytes=N-`` is honoured
    because the client uses it to resume an interrupted download.
    """
    with hub._lock:
        repo = hub._repo(repo_id, repo_type)
        commit = repo.resolve(revision)
        data = commit.files.get(path)
    if data is None:
        raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
    out_headers = {
        "Content-Type": "application/octet-stream",
        "ETag": f'"{git_blob_oid(data)}"',
        "X-Repo-Commit": commit.sha,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
    }
    rng = headers.get("Range", "")
    if rng.startswith("bytes="):
        first, _, last = rng[6:].split(",")[0].partition("-")
        start = int(first or 0)
        end = min(int(last), len(data) - 1) if last else len(data) - 1
        if start < len(data):
            out_headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return _Response(206, data[start : end + 1], out_headers)
    return _Response(200, data, out_headers)


# ---------------------------------------------------------------------- client subprocess helper
class ClientError(AssertionError):
    """A client subprocess failed; the message carries its full stdout and stderr."""


def run_client(
    code: str, env: Mapping[str, str | None], timeout: float = 180, cwd: str | Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) with ``sys.executable -c`` and ``os.environ`` updated by ``env``.

    A subprocess is needed because ``huggingface_hub`` freezes ``HF_ENDPOINT`` at import time.  ``None``
    values in ``env`` remove the variable.  Raises :class:`ClientError` with the output on a non-zero exit
    or a timeout.
    """
    full_env = dict(os.environ)
    for key, value in env.items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=full_env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClientError(
            f"client timed out after {timeout}s\n--- stdout ---\n{exc.stdout}\n--- stderr ---\n{exc.stderr}"
        ) from None
    if proc.returncode != 0:
        raise ClientError(
            f"client exited with {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


# ---------------------------------------------------------------------- pytest fixtures
@pytest.fixture(scope="session")
def _local_hub_session() -> Iterator[LocalHub]:
    """One server per test session (per xdist worker); :func:`hub_server` resets it for every test."""
    with LocalHub() as hub:
        yield hub


@pytest.fixture
def hub_server(_local_hub_session: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """A running :class:`LocalHub` with no repos and a fresh, empty ``HF_HOME`` for this test.

    The server itself is shared by the session; state is wiped before each test, so tests may use
    fixed repo ids such as ``user/tiny``.  Pass ``hub_server.endpoint_env()`` to :func:`run_client`.
    """
    _local_hub_session.reset(hf_home=tmp_path_factory.mktemp("hf_home"))
    yield _local_hub_session
    _local_hub_session.reset()
