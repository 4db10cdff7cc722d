"""DynaBERT Studio's Qt front end: thin views over the core jobs, fed by core events through a bridge."""
