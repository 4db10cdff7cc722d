"""DynaBERT Studio engine: data, dynamic slicing, rewiring, distillation, export. No Qt here."""

__version__ = "0.1.0"
