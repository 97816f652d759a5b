"""What the engine double (``lucene_testkit.FakeEngine``) does when an engine encodes text itself by
calling a remote model: Elasticsearch's ``custom`` inference service and OpenSearch's ML Commons
remote models, implemented as the engines document them, not as sparsebridge's code expects.

Elasticsearch (inference API, ``custom`` service, 8.19+ / 9.1+):

* ``PUT /_inference/<task_type>/<id>`` stores the endpoint (an existing id is refused with 400
  ``resource_already_exists_exception``; ``GET`` answers ``{"endpoints": [...]}`` without the
  secrets, 404 ``resource_not_found_exception`` for an unknown id; ``DELETE`` removes it). As the
  engine does at creation, a ``sparse_embedding`` endpoint is validated with one test call.
* A call: the request template ``service_settings.request.content`` with ``${input}`` replaced by
  the JSON array of the input strings, ``${input_type}`` by ``service_settings.input_type``'s
  translation of the context (``search`` / ``ingest``), and ``${name}`` by the
  ``secret_parameters`` and ``task_settings.parameters`` values, in the content, the URL and the
  headers; POSTed to ``service_settings.url``. The answer is read with ``response.json_parser``'s
  ``token_path`` / ``weight_path`` (JSONPath ``$.a.b[*].c[*].d``: one list per input), as
  ``SparseEmbeddingResults`` (a token string and its weight per entry).
* ``sparse_vector`` with ``inference_id`` + ``query``: the query text encoded by that endpoint in
  the ``search`` context, then scored as ``query_vector`` is (pruning included).
* ``semantic_text`` fields: at ingest the field's string is sent to ``inference_id`` (context
  ``ingest``) and the embedding kept beside the document (``_source`` keeps the text); with the
  endpoint's ``chunking_settings.strategy`` ``none`` the whole text is one chunk (other strategies
  are not modelled and refused). A ``semantic`` query encodes its ``query`` with
  ``search_inference_id`` (else ``inference_id``) and scores the dot product with the field's
  chunks, best chunk.

OpenSearch (ML Commons remote models, neural-search):

* ``POST /_plugins/_ml/connectors/_create`` stores a connector (``connector_id``);
  ``POST /_plugins/_ml/models/_register`` with ``function_name: remote`` and a ``connector_id``
  answers ``{"task_id", "status": "CREATED", "model_id"}``; ``POST .../<model_id>/_deploy`` answers
  a task id; ``GET /_plugins/_ml/tasks/<task_id>`` answers ``RUNNING`` at the first look and
  ``COMPLETED`` after it (a deploy is asynchronous). A model that is not deployed cannot predict.
* A predict: the ``predict`` action of the model's connector; ``pre_process_function``
  ``connector.pre_process.default.embedding`` puts the input texts (a JSON array) into
  ``parameters.texts``; ``${parameters.<name>}`` in ``request_body``, ``url`` and ``headers`` comes
  from those and the connector's ``parameters``, ``${credential.<name>}`` from its ``credential``.
  An answer that is a JSON object is the model output's map as is; any other JSON value is wrapped
  as ``{"response": value}``. Other pre-process and any post-process functions are not modelled
  (refused).
* neural-search reads a sparse model's output map as ``response``: one token -> weight map per text.
  The ``sparse_encoding`` ingest processor (``field_map`` text field -> sparse field) runs in an
  index's ``index.default_pipeline`` on every indexed document; ``neural_sparse`` with
  ``query_text`` + ``model_id`` encodes the text with the model and scores as ``query_tokens`` do.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import httpx

_PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")
_ids = itertools.count(1)


class InferenceError(Exception):
    """An inference step failed: (status, error type, reason) as the engine answers it."""

    def __init__(self, status: int, etype: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.etype, self.reason = status, etype, reason


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def json_path(document: Any, path: str) -> Any:
    """JSONPath of the ``$.a.b[*].c`` form: each ``[*]`` maps over a list, so the result nests one
    list per ``[*]`` (for the sparse paths: a list of lists, one per input)."""
    if not path.startswith("$"):
        raise InferenceError(400, "illegal_argument_exception", f"[json_parser] path must start with $: {path}")
    steps = [s for s in re.split(r"\.", path[1:]) if s]

    def walk(node: Any, rest: list[str]) -> Any:
        if not rest:
            return node
        step, *more = rest
        many = step.endswith("[*]")
        key = step[:-3] if many else step
        if key:
            if not isinstance(node, dict) or key not in node:
                raise InferenceError(400, "illegal_argument_exception", f"unable to find field [{key}] in {path}")
            node = node[key]
        if many:
            if not isinstance(node, list):
                raise InferenceError(400, "illegal_argument_exception", f"[{key}] is not a list in {path}")
            return [walk(item, more) for item in node]
        return walk(node, more)

    return walk(document, steps)


class InferenceEngineMixin:
    """Elasticsearch's inference endpoints and OpenSearch's remote models for :class:`FakeEngine`
    (see the module docstring); its hooks are :meth:`_route_inference`, :meth:`es_infer`,
    :meth:`os_predict` and :meth:`_ingest_inference`."""

    http_timeout: float = 60.0

    def _state(self) -> dict[str, dict[str, Any]]:
        return self.__dict__.setdefault(
            "_inference_state",
            {"endpoints": {}, "connectors": {}, "models": {}, "tasks": {}, "pipelines": {}, "calls": []},
        )

    @property
    def model_calls(self) -> list[dict[str, Any]]:
        """Every call made to a remote model: url, the body and the headers sent, and the answer's status."""
        return self._state()["calls"]

    # --- routes

    def _route_inference(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, Any] | None:
        segs = [s for s in path.split("/") if s]
        try:
            if self.is_es and segs[:1] == ["_inference"] and len(segs) == 3:
                return self._endpoint_api(method, segs[1], segs[2], json.loads(body or b"{}"))
            if not self.is_es and segs[:2] == ["_plugins", "_ml"]:
                return self._ml_api(method, segs[2:], json.loads(body or b"{}"))
            if segs[:2] == ["_ingest", "pipeline"] and len(segs) == 3 and method == "PUT":
                self._state()["pipelines"][segs[2]] = json.loads(body)
                return 200, {"acknowledged": True}
            if len(segs) == 2 and segs[1] == "_settings" and method == "PUT":
                if segs[0] not in self.indices:
                    return self._missing(segs[0])
                _merge(self.indices[segs[0]]["settings"], json.loads(body))
                return 200, {"acknowledged": True}
        except InferenceError as err:
            from lucene_testkit import _error

            return _error(err.status, err.etype, err.reason)
        return None

    def _endpoint_api(self, method: str, task_type: str, inference_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        endpoints = self._state()["endpoints"]
        if method == "PUT":
            if inference_id in endpoints:
                raise InferenceError(
                    400, "resource_already_exists_exception", f"Inference endpoint [{inference_id}] already exists"
                )
            if body.get("service") != "custom":
                raise InferenceError(400, "illegal_argument_exception", "the engine double models the custom service")
            endpoint = {"inference_id": inference_id, "task_type": task_type, **body}
            if task_type == "sparse_embedding":
                self._call_endpoint(endpoint, ["how big is the test input"], "ingest")  # validated at creation
            endpoints[inference_id] = endpoint
            return 200, self._endpoint_info(endpoint)
        if inference_id not in endpoints or endpoints[inference_id]["task_type"] != task_type:
            raise InferenceError(404, "resource_not_found_exception", f"Inference endpoint not found [{inference_id}]")
        if method == "GET":
            return 200, {"endpoints": [self._endpoint_info(endpoints[inference_id])]}
        if method == "DELETE":
            del endpoints[inference_id]
            return 200, {"acknowledged": True, "pipelines": []}
        raise InferenceError(400, "illegal_argument_exception", f"no handler for {method} _inference")

    @staticmethod
    def _endpoint_info(endpoint: dict[str, Any]) -> dict[str, Any]:
        settings = {k: v for k, v in endpoint["service_settings"].items() if k != "secret_parameters"}
        info = {
            "inference_id": endpoint["inference_id"],
            "task_type": endpoint["task_type"],
            "service": "custom",
            "service_settings": settings,
        }
        if endpoint.get("chunking_settings"):
            info["chunking_settings"] = endpoint["chunking_settings"]
        if endpoint.get("task_settings"):
            info["task_settings"] = endpoint["task_settings"]
        return info

    def _ml_api(self, method: str, segs: list[str], body: dict[str, Any]) -> tuple[int, Any]:
        st = self._state()
        if segs == ["connectors", "_create"] and method == "POST":
            cid = f"conn-{next(_ids)}"
            st["connectors"][cid] = body
            return 200, {"connector_id": cid}
        if segs == ["models", "_register"] and method == "POST":
            if body.get("function_name") != "remote" or body.get("connector_id") not in st["connectors"]:
                raise InferenceError(400, "illegal_argument_exception", "a remote model needs an existing connector_id")
            mid = f"model-{next(_ids)}"
            st["models"][mid] = {**body, "deployed": False}
            tid = self._task(mid, "REGISTER_MODEL", then=None)
            return 200, {"task_id": tid, "status": "CREATED", "model_id": mid}
        if len(segs) == 3 and segs[0] == "models" and segs[2] == "_deploy" and method == "POST":
            mid = segs[1]
            if mid not in st["models"]:
                raise InferenceError(404, "status_exception", f"Failed to find model with ID: {mid}")
            tid = self._task(mid, "DEPLOY_MODEL", then=lambda: st["models"][mid].update(deployed=True))
            return 200, {"task_id": tid, "task_type": "DEPLOY_MODEL", "status": "CREATED"}
        if len(segs) == 2 and segs[0] == "tasks" and method == "GET":
            task = st["tasks"].get(segs[1])
            if task is None:
                raise InferenceError(404, "status_exception", f"Failed to find task with ID: {segs[1]}")
            task["looks"] += 1
            if task["looks"] >= 2 and task["state"] == "RUNNING":
                task["state"] = "COMPLETED"
                if task["then"] is not None:
                    task["then"]()
            public = {k: task[k] for k in ("model_id", "task_type", "function_name", "state", "is_async")}
            return 200, {**public, "create_time": 1, "last_update_time": 2}
        raise InferenceError(400, "illegal_argument_exception", f"the engine double has no ML API {method} {segs}")

    def _task(self, model_id: str, task_type: str, then: Any) -> str:
        tid = f"task-{next(_ids)}"
        self._state()["tasks"][tid] = {
            "model_id": model_id,
            "task_type": task_type,
            "function_name": "REMOTE",
            "state": "RUNNING",
            "is_async": True,
            "looks": 0,
            "then": then,
        }
        return tid

    # --- Elasticsearch: calling an endpoint

    def es_infer(self, inference_id: str, texts: list[str], context: str) -> list[dict[str, float]]:
        """The sparse embeddings of ``texts`` by endpoint ``inference_id`` (context ``search`` or
        ``ingest``): one token -> weight map per text."""
        endpoint = self._state()["endpoints"].get(inference_id)
        if endpoint is None:
            raise InferenceError(404, "resource_not_found_exception", f"Inference endpoint not found [{inference_id}]")
        if endpoint["task_type"] != "sparse_embedding":
            raise InferenceError(400, "status_exception", f"[{inference_id}] is not a sparse_embedding endpoint")
        return self._call_endpoint(endpoint, texts, context)

    def _call_endpoint(self, endpoint: dict[str, Any], texts: list[str], context: str) -> list[dict[str, float]]:
        settings = endpoint["service_settings"]
        values = {k: str(v) for k, v in (settings.get("secret_parameters") or {}).items()}
        values.update(
            {k: json.dumps(v) for k, v in ((endpoint.get("task_settings") or {}).get("parameters") or {}).items()}
        )
        translation = settings.get("input_type") or {}
        values["input_type"] = (translation.get("translation") or {}).get(context, translation.get("default", ""))
        values["input"] = json.dumps(texts)
        content = _fill(settings["request"]["content"], values)
        headers = {k: _fill(v, values) for k, v in (settings.get("headers") or {}).items()}
        answer = self._post(_fill(settings["url"], values), content, headers, entity=endpoint["inference_id"])
        parser = settings["response"]["json_parser"]
        tokens, weights = json_path(answer, parser["token_path"]), json_path(answer, parser["weight_path"])
        if len(tokens) != len(texts) or len(weights) != len(texts):
            raise InferenceError(500, "status_exception", f"{len(tokens)} embeddings for {len(texts)} inputs")
        return [{str(t): float(w) for t, w in zip(ts, ws)} for ts, ws in zip(tokens, weights)]

    # --- OpenSearch: a remote model's predict

    def os_predict(self, model_id: str, texts: list[str]) -> list[dict[str, float]]:
        """neural-search's sparse encoding of ``texts`` by remote model ``model_id``: the model
        output map's ``response``, one token -> weight map per text."""
        st = self._state()
        model = st["models"].get(model_id)
        if model is None:
            raise InferenceError(404, "status_exception", f"Failed to find model with ID: {model_id}")
        if not model["deployed"]:
            raise InferenceError(
                400, "illegal_argument_exception", f"Model not ready yet. Please deploy the model first: {model_id}"
            )
        connector = st["connectors"][model["connector_id"]]
        (action,) = [a for a in connector["actions"] if a["action_type"] == "predict"]
        if action.get("post_process_function") or action.get("pre_process_function") not in (
            None,
            "connector.pre_process.default.embedding",
        ):
            raise InferenceError(
                400, "illegal_argument_exception", "the engine double models the default embedding pre-process only"
            )
        params = {k: str(v) for k, v in (connector.get("parameters") or {}).items()}
        params["texts"] = json.dumps(texts)
        values = {f"parameters.{k}": v for k, v in params.items()}
        values.update({f"credential.{k}": str(v) for k, v in (connector.get("credential") or {}).items()})
        answer = self._post(
            _fill(action["url"], values),
            _fill(action["request_body"], values),
            {k: _fill(v, values) for k, v in (action.get("headers") or {}).items()},
            method=action.get("method", "POST"),
        )
        output = answer if isinstance(answer, dict) else {"response": answer}
        if "response" not in output:
            raise InferenceError(400, "illegal_argument_exception", "the model output has no [response] key")
        maps = output["response"]
        if not isinstance(maps, list) or len(maps) != len(texts):
            raise InferenceError(
                500, "illegal_state_exception", f"the model answered {maps!r:.80} for {len(texts)} texts"
            )
        return [{str(t): float(w) for t, w in m.items()} for m in maps]

    def _post(
        self, url: str, content: str, headers: dict[str, str], method: str = "POST", entity: str | None = None
    ) -> Any:
        """Call a remote model; a failed answer becomes the engine's error (see :func:`remote_error`)."""
        call = {"url": url, "body": content, "headers": dict(headers), "status": None}
        self.model_calls.append(call)
        try:
            resp = httpx.request(method, url, content=content.encode(), headers=headers, timeout=self.http_timeout)
        except httpx.HTTPError as exc:  # the engines answer an error naming the failed call
            raise InferenceError(500, "status_exception", f"Failed to send request [{url}]: {exc}") from None
        call["status"] = resp.status_code
        if resp.status_code >= 400:
            raise remote_error(self.is_es, resp.status_code, resp.text[:200], entity)
        return resp.json()

    # --- ingest: default pipelines (OpenSearch) and semantic_text fields (Elasticsearch)

    def _pipeline_of(self, index: str) -> list[dict[str, Any]]:
        """The ``sparse_encoding`` processors of the index's default pipeline (OpenSearch)."""
        from lucene_testkit import _flat_settings

        pipeline = _flat_settings(self.indices[index]["settings"]).get("default_pipeline")
        if self.is_es or pipeline in (None, "_none"):
            return []
        spec = self._state()["pipelines"].get(pipeline)
        if spec is None:
            raise InferenceError(400, "illegal_argument_exception", f"pipeline with id [{pipeline}] does not exist")
        processors = []
        for proc in spec.get("processors", []):
            ((kind, conf),) = proc.items()
            if kind != "sparse_encoding":
                raise InferenceError(
                    400, "parse_exception", f"the engine double models sparse_encoding only, got {kind}"
                )
            processors.append(conf)
        return processors

    def _ingest_inference(
        self, index: str, doc_id: str, source: dict[str, Any], encoded: dict[tuple, Any]
    ) -> dict[str, Any]:
        """``source`` after the index's default ingest pipeline, with what ``encode_bulk`` made."""
        source = dict(source)
        for conf in self._pipeline_of(index):
            for text_field, vector_field in conf["field_map"].items():
                if isinstance(source.get(text_field), str):
                    vector = encoded[(index, doc_id, vector_field)]
                    if isinstance(vector, InferenceError):
                        raise vector
                    source[vector_field] = vector
        return source

    def encode_bulk(self, items: list[tuple[str, str, dict[str, Any]]]) -> dict[tuple, Any]:
        """What the engine's models make of a bulk request's (index, id, source) items, batched as
        the engines batch them: Elasticsearch's ``semantic_text`` inputs, up to the endpoint's
        ``service_settings.batch_size`` (default 10) per request; OpenSearch's ``sparse_encoding``
        processor, up to its ``batch_size`` (default 1) documents per predict. (index, id, field)
        -> the field's value (``semantic_text``: its chunks), or the InferenceError."""
        jobs: dict[tuple[str, str, int], list[tuple[tuple, str]]] = {}
        out: dict[tuple, Any] = {}
        for index, doc_id, source in items:
            if index not in self.indices:
                continue
            if not self.is_es:
                try:
                    processors = self._pipeline_of(index)
                except InferenceError as err:
                    out.update({(index, doc_id, f): err for f in source})
                    continue
                for conf in processors:
                    for text_field, vector_field in conf["field_map"].items():
                        if isinstance(source.get(text_field), str):
                            job = ("os", conf["model_id"], int(conf.get("batch_size") or 1))
                            jobs.setdefault(job, []).append(((index, doc_id, vector_field), source[text_field]))
                continue
            for name, prop in (self.indices[index]["mappings"].get("properties") or {}).items():
                if prop.get("type") != "semantic_text" or not isinstance(source.get(name), str):
                    continue
                endpoint = self._state()["endpoints"].get(prop["inference_id"]) or {}
                chunking = prop.get("chunking_settings") or endpoint.get("chunking_settings") or {}
                if chunking.get("strategy") != "none":
                    out[(index, doc_id, name)] = InferenceError(
                        400, "illegal_argument_exception", "the engine double models chunking strategy none only"
                    )
                    continue
                size = int((endpoint.get("service_settings") or {}).get("batch_size") or 10)
                jobs.setdefault(("es", prop["inference_id"], size), []).append(((index, doc_id, name), source[name]))
        for (engine, model, size), inputs in jobs.items():
            for start in range(0, len(inputs), size):
                part = inputs[start : start + size]
                texts = [text for _, text in part]
                try:
                    vectors: list[Any] = (
                        self.es_infer(model, texts, "ingest") if engine == "es" else self.os_predict(model, texts)
                    )
                except InferenceError as err:
                    vectors = [err] * len(part)
                for (key, _), vector in zip(part, vectors):
                    chunked = engine == "es" and not isinstance(vector, InferenceError)
                    out[key] = [vector] if chunked else vector
        return out

    def semantic_embeddings(
        self, idx: dict[str, Any], index: str, doc_id: str, source: dict[str, Any], encoded: dict[tuple, Any]
    ) -> None:
        """Keep the ``semantic_text`` chunks ``encode_bulk`` made for a document being indexed."""
        chunks = {k[2]: v for k, v in encoded.items() if k[:2] == (index, doc_id)}
        for value in chunks.values():
            if isinstance(value, InferenceError):
                raise value
        kept = idx.setdefault("semantic", {})
        kept.pop(doc_id, None)
        if chunks:
            kept[doc_id] = chunks

    def semantic_score(
        self, idx: dict[str, Any], spec: dict[str, Any], doc_id: str
    ) -> tuple[bool, dict[str, float], list]:
        """(field is semantic_text, the encoded query, the document's chunks) of a ``semantic`` query."""
        prop = (idx["mappings"].get("properties") or {}).get(spec["field"]) or {}
        if prop.get("type") != "semantic_text":
            return False, {}, []
        query = self.encoded_query("es", prop.get("search_inference_id") or prop["inference_id"], spec["query"])
        return True, query, (idx.get("semantic", {}).get(doc_id) or {}).get(spec["field"], [])

    def encoded_query(self, engine: str, model: str, text: str) -> dict[str, float]:
        """A query text encoded once per search, as the engines do when they rewrite the query
        (the double scores document by document)."""
        cache = self.__dict__.setdefault("_encoded_queries", {})
        key = (engine, model, text)
        if key not in cache:
            infer = self.es_infer(model, [text], "search") if engine == "es" else self.os_predict(model, [text])
            cache[key] = infer[0]
        return cache[key]


def remote_error(is_es: bool, status: int, body: str, entity: str | None) -> InferenceError:
    """What the engine answers when the remote model answered ``status`` with ``body``.

    Elasticsearch's inference response handlers: a message by the kind of status (authentication
    for 401 / 403, rate limit for 429, server error for 5xx, else unsuccessful) naming the endpoint
    and the status, with the body as ``Error message``, and the remote status as the answer's
    status. OpenSearch's ML Commons: ``Error from remote service:`` and the body, with the remote
    status.
    """
    if not is_es:
        return InferenceError(status, "status_exception", f"Error from remote service: {body}")
    if status in (401, 403):
        kind = "Received an authentication error status code"
    elif status == 429:
        kind = "Received a rate limit status code"
    elif status >= 500:
        kind = "Received a server error status code"
    else:
        kind = "Received an unsuccessful status code"
    message = f"{kind} for request from inference entity id [{entity}] status [{status}]. Error message: [{body}]"
    return InferenceError(status, "status_exception", message)


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
