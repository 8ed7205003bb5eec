"""kopf handlers: thin decorators that call reconcile/. The only package that imports kopf."""
