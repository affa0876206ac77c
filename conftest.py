# pyinfra's CLI monkey-patches the standard library with gevent; doing it before
# pytest plugins import ssl-using modules keeps gevent from warning on every run.
import pyinfra_cli  # noqa: F401
