"""llama.cpp and what serves from it: the build and its proof, the models, the model servers
and their command lines, RPC workers, API keys, the Prometheus targets. Each step keeps its
facts beside it (`*_facts.py`).
"""
