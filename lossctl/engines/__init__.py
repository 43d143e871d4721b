"""Engines that run an evaluation somewhere else than this process (``--engine``).

Each imports its framework lazily, inside the functions that use it: ``lossctl --help``
and the local engine never load them.
"""
