"""connector-builder: generate typed Python connectors from declarative specs.

This module deliberately imports nothing, so that generated packages, which import
``builder.runtime``, load none of the generator's dependencies.
"""

__version__ = "0.1.0"
