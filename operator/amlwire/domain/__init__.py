"""Pure domain logic: desired state, plans, conditions, error kinds. No I/O, no clients, no kopf."""
