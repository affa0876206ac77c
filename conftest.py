# httpcore imports trio when it is installed, and trio needs select.epoll,
# which gevent's monkey-patching removes: import it first.
import httpcore  # noqa: F401, I001

# pyinfra's CLI monkey-patches the standard library with gevent (the plan
# harness runs pyinfra in-process).
import pyinfra_cli  # noqa: F401
