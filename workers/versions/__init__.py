"""The workers' side of model versions: start-up (queues, registration, heartbeat), keeping
every tracked version in step with the catalogue, retiring one
(docs/architecture.md#model-versions).
"""
