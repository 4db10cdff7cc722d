"""One page per workflow step: Project, Importance, Train, Explore, Export."""
