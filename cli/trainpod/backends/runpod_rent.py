"""Renting a pod: GPU types ordered by stock, live prices against max_cost, fallbacks on capacity, a bounded
start (a pod that goes ERROR or stays PROVISIONING is ended), registry credentials."""

from __future__ import annotations

import time
from typing import Any

from trainpod import credentials
from trainpod.backends.base import LaunchPlan, RunHandle
from trainpod.backends.runpod_plan import (
    TERMINATE_AFTER_STARTUP_MIN,
    _pod_request,
    pod_name,
    pod_secret_env,
    registry_credential_name,
    terminate_after,
)
from trainpod.settings import Settings


class PodRental:
    start_timeout_s = 600.0  # a pod that has not started by then is terminated; the next fallback is tried

    provision_timeout_s = 300.0  # a pod still PROVISIONING (no machine) by then is terminated, with its system log

    def _rent(self, plan: LaunchPlan, settings: Settings, api: Any, *, first_attempt: int,
              relaunches: int, previous: RunHandle | None = None) -> RunHandle:
        """Rent the first of ``provider_request["attempts"]`` (the profile's GPU type, then its fallbacks; on-demand:
        ordered by the catalog's stock, out-of-stock ones skipped) that is offered at an acceptable price, has
        capacity and starts; each try is a numbered pod name (``-aN``). On-demand pods go through REST v2
        (``api``), spot pods through the legacy GraphQL client. A relaunch (``previous``) keeps the run's
        creation time and what others recorded on it (pipeline stage)."""
        from trainpod.backends.runpod_api import CapacityError, ForbiddenError, GraphQLClient
        from trainpod.errors import TrainpodError
        from trainpod.redact import register_secret
        from trainpod.runs import RunRegistry
        from trainpod.spec import utcnow_iso

        spec, req = plan.spec, plan.provider_request
        spot = bool(req["spot"])
        renter = GraphQLClient.from_settings(settings) if spot else api
        registry = RunRegistry(settings.state_path)
        offered = {g.id: g for g in renter.gpu_types()}
        env = {**plan.env, **pod_secret_env(plan, settings)}  # mints the run's S3 session (each rent: renewal)
        for name in plan.secret_env:
            register_secret(env.get(name))
        tried: list[str] = []
        candidates = list(req["attempts"]) if spot else self._by_stock(api, req, tried)
        auth_id = self._registry_auth(api, settings)
        last_detail = ""
        for attempt, choice in enumerate(candidates, start=first_attempt):
            gpu, cloud = choice["gpu_type_id"], choice["cloud_type"]
            info = offered.get(gpu)
            price = info.price(cloud, spot=spot) if info else None
            if price is None:
                tried.append(f"{gpu} ({cloud}): not offered by RunPod now")
                continue
            cap = req.get("bid_per_gpu")
            if spot and cap is not None and price > cap:
                tried.append(f"{gpu} ({cloud}): spot price ${price:g} is above the ${cap:g} cap")
                continue
            estimate = self._estimate_at(plan, price)
            pod_request = _pod_request(req, name=pod_name(spec.run_id, attempt), gpu_type_id=gpu,
                                       cloud_type=cloud, env=env, auth_id=auth_id,
                                       bid=price if spot else None,
                                       deadline=self._terminate_after(plan, price) if spot else None)
            try:
                pod = renter.deploy(pod_request)
            except (CapacityError, ForbiddenError) as exc:
                last_detail = exc.message
                tried.append(f"{gpu} ({cloud}): {'no capacity' if spot else exc.message}")
                continue
            own = self._record(plan)
            handle = RunHandle(
                run_id=spec.run_id, backend=self.name, preset=spec.workload.name, provider_id=pod.id,
                output=spec.storage.output, created=previous.created if previous else utcnow_iso(),
                extra={**(previous.extra if previous else {}), "pod_name": pod_request.name, "gpu_type_id": gpu,
                       "cloud_type": cloud, "spot": spot, "api": "graphql" if spot else "rest-v2",
                       "price_per_gpu_hour": price,
                       "price_source": "RunPod API gpuTypes" if spot else "RunPod REST v2 /v2/catalog/gpus",
                       "cost_per_hr": pod.cost_per_hr, "estimated_cost_usd": estimate, "started": None,
                       "relaunches": relaunches, "next_attempt": attempt + 1,
                       "stop_grace_seconds": spec.stop_grace_seconds, **own},
            )
            if pod_request.terminate_after:
                handle.extra["terminate_after"] = pod_request.terminate_after
            registry.save(handle)
            failure = self._wait_started(api, pod.id)
            if failure is None:
                started = api.pod(pod.id)
                if started is not None and started.cost_per_hr:
                    handle = registry.update(spec.run_id, cost_per_hr=started.cost_per_hr)
                return registry.update(spec.run_id, started=utcnow_iso())
            reason, fatal = failure
            api.terminate(pod.id)
            registry.update(spec.run_id, cancelled=True)
            if fatal:
                raise TrainpodError(
                    f"pod {pod.id} ({gpu}, {cloud}) failed while starting and was terminated: {reason}",
                    "check that RunPod can pull the image (TRAINPOD_REGISTRY, TRAINPOD_REGISTRY_USERNAME/"
                    "PASSWORD; a changed password needs `trainpod runs sweep --yes` to drop the old credential)",
                )
            tried.append(f"{gpu} ({cloud}): pod {pod.id} {reason} (terminated)")
        hint = ("add runpod_fallback_gpu_type_ids to the hardware table, set TRAINPOD_RUNPOD_CLOUD_TYPE=ALL, "
                "or retry later")
        if last_detail and all("no longer" not in t for t in tried):
            hint += f"; if every GPU type was refused the same way the request itself may break a rule: {last_detail}"
        raise CapacityError("no RunPod pod could be started:\n  - " + "\n  - ".join(tried), hint)

    def _terminate_after(self, plan: LaunchPlan, price: float) -> str | None:
        """GraphQL's provider-side deadline: max runtime (or what max_cost buys at ``price``) + stop grace +
        start-up allowance, from now."""
        req = plan.provider_request
        minutes = req.get("max_runtime_minutes")
        gpus = max(1, plan.gpus or 1)
        if minutes is None and req.get("max_cost_usd") is not None and price:
            minutes = float(req["max_cost_usd"]) / (price * gpus) * 60
        if minutes is None:
            return None
        return terminate_after(float(minutes) + plan.spec.stop_grace_seconds / 60 + TERMINATE_AFTER_STARTUP_MIN)

    def _by_stock(self, api: Any, req: dict[str, Any], tried: list[str]) -> list[dict[str, str]]:
        """The attempts ordered by the catalog's pod stock for the CUDA floor (HIGH first, then the profile's order);
        those out of stock are left out. Refuses before renting when none is in stock, naming what was checked."""
        from trainpod.backends.runpod_api import CapacityError, RunPodAPIError
        from trainpod.backends.runpod_v2 import STOCK_RANK

        attempts = list(req["attempts"])
        count = int(req["body"]["gpu"].get("count", 1))
        floor = req.get("min_cuda_version")
        stock = {}
        try:
            for cloud in dict.fromkeys(a["cloud_type"] for a in attempts):
                gpus = [a["gpu_type_id"] for a in attempts if a["cloud_type"] == cloud]
                for s in api.stock(gpus, cloud, count, floor):
                    stock[(s.gpu_type_id, cloud)] = s
        except RunPodAPIError as exc:  # the catalog is an ordering aid, not a reservation: rent in profile order
            tried.append(f"stock unknown ({exc.message}); trying in the profile's order")
            return attempts
        ranked = [(i, a) for i, a in enumerate(attempts) if stock[(a["gpu_type_id"], a["cloud_type"])].in_stock]
        if not ranked:
            checked = "; ".join(
                f"{a['gpu_type_id']} ({a['cloud_type']}): {stock[(a['gpu_type_id'], a['cloud_type'])].availability}"
                + ("" if stock[(a["gpu_type_id"], a["cloud_type"])].cuda_available or
                   stock[(a["gpu_type_id"], a["cloud_type"])].availability in ("NONE", "UNLISTED")
                   else f", none free with CUDA >= {floor}")
                for a in attempts)
            raise CapacityError(
                f"nothing to rent: no GPU type is in stock on RunPod for {count} GPU(s)"
                f"{f' with CUDA >= {floor}' if floor else ''} (checked {checked}); no pod was created",
                "retry later, add runpod_fallback_gpu_type_ids to the hardware table, or set "
                "TRAINPOD_RUNPOD_CLOUD_TYPE=ALL",
            )
        ranked.sort(key=lambda ia: (-STOCK_RANK[stock[(ia[1]["gpu_type_id"], ia[1]["cloud_type"])].availability], ia[0]))
        for a in attempts:
            s = stock[(a["gpu_type_id"], a["cloud_type"])]
            if not s.in_stock:
                tried.append(f"{a['gpu_type_id']} ({a['cloud_type']}): out of stock ({s.availability}"
                             f"{f', CUDA >= {floor}' if floor else ''}); not tried")
        return [a for _i, a in ranked]

    def _wait_started(self, api: Any, pod_id: str) -> tuple[str, bool] | None:
        """None once the pod runs; else (why, fatal). ERROR (e.g. the image pull failed) is fatal: every other GPU
        type would fail the same way. PROVISIONING past ``provision_timeout_s`` (no machine) and not started by
        ``start_timeout_s`` are not. The reason carries the pod's system log."""
        begun = time.monotonic()
        while True:
            pod = api.pod(pod_id)
            now = time.monotonic()
            if pod is not None and pod.desired_status == "RUNNING" and pod.started:
                return None
            if pod is None or pod.desired_status in ("EXITED", "TERMINATED"):
                return "ended before it started", False
            if pod.failed:
                return "is in ERROR" + self._system_log(api, pod_id, stop_first=False), True
            if pod.desired_status == "PROVISIONING" and now - begun >= self.provision_timeout_s:
                return (f"was still PROVISIONING after {self.provision_timeout_s:g}s (no machine)"
                        + self._system_log(api, pod_id)), False
            if now - begun >= self.start_timeout_s:
                return f"did not start within {self.start_timeout_s:g}s" + self._system_log(api, pod_id), False
            time.sleep(min(self.poll_s, max(0.0, self.start_timeout_s - (now - begun))))

    @staticmethod
    def _system_log(api: Any, pod_id: str, stop_first: bool = True, lines: int = 20) -> str:
        """The pod's recent system log (image pull, start errors) as an indented block; '' when unavailable.
        A pod still starting is stopped first, so the log stream ends after its backlog."""
        from trainpod.backends.runpod_api import RunPodAPIError

        try:
            if stop_first:
                api.stop(pod_id)
            events = list(api.logs(pod_id, source="system", tail=lines, timeout_s=5.0))
        except (RunPodAPIError, AttributeError):
            return ""
        if not events:
            return ""
        return "; its system log:\n      " + "\n      ".join(e.line for e in events[-lines:])

    @staticmethod
    def _registry_auth(api: Any, settings: Settings) -> str | None:
        """Registry credentials for a private image, stored at RunPod (None for a public image): the pull-only
        token (TRAINPOD_REGISTRY_PULL_*) when configured, else the push login (the plan warns). One credential per
        registry + user, reused by its stable name (never one per launch)."""
        auth = credentials.registry_secret(settings)
        if auth is None:
            return None
        user, password = auth
        return api.save_registry_auth(registry_credential_name(settings) or "", user, password)

