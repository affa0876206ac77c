"""The application stack: the container runtime, the compose engine, the checkout, the
secrets and the `.env`, the images.
"""
