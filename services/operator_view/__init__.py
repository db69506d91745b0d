"""The operator's web view: cameras overview, live wall, worst-N gallery, frame pages, registry and actions.

Why inside the Serve application: it is one more deployment (a FastAPI ingress with a tenth of a CPU and one
replica) that ``zsad up``, ``serve deploy`` and the KubeRay RayService start, upgrade and stop with the pipeline,
so there is no second server to run or secure. It reads what the pipeline writes (Redis results, maps and
event streams; frames read back from Kafka; the prompt registry; the ingest status) and never sits on the
frame path: the live wall follows each camera's event stream with ``XREAD BLOCK`` and forwards it as
server-sent events. Every route needs a role's token (:mod:`~services.operator_view.auth`); writes need the
operator role. Pages are Jinja2 templates shipped as package data, with no script or style from outside.
"""
