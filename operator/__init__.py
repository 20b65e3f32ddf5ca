"""quantramp operator: kopf handlers, canary engine, adapters."""
