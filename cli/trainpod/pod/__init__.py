"""Code that runs inside the container next to the workload: the pod supervisor (PID 1 of a RunPod pod), the job
supervisor a custom command runs under, and ``contrib``, the helper a custom command imports.

It imports the core (contract, spec, manifest, settings) and storage, never the launcher's backends: a pod starts
with the least it needs. The one provider piece it uses is RunPod's raw API client, to terminate its own pod.
"""
