"""The studio's pages, one per workflow step (Project, Importance, Train, Explore, Export), and the widgets they share."""


class ReloadWhenShown:
    """For a page whose `reload()` redraws charts: a project update while the page is hidden only marks it
    stale, and it reloads when shown (a stage ending must not redraw hidden charts in the middle of live curves)."""

    _stale = False

    def reload_when_shown(self) -> None:
        if self.isVisible():
            self.reload()
        else:
            self._stale = True

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self._stale:
            self._stale = False
            self.reload()
        super().showEvent(event)
