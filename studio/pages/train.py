"""Train page: start/stop/resume the pipeline, a progress bar per stage with ETA, live loss and evaluation curves, a log."""

from __future__ import annotations

import html
import time

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from dynastudio.core.config import STAGES
from dynastudio.core.events import (
    CheckpointSaved,
    EvalEnded,
    LogMessage,
    StageEnded,
    StageProgress,
    StageStarted,
    StepEnded,
    TeacherChecked,
)

from ..errors import show_error
from ..gpus import gpu_count, run_processes
from ..state import StudioState
from ..style import BANNER_CSS, HINT_CSS, METRIC_BOUNDS, chance_name, fmt_seconds, label_sort_key
from .curves import CurvePlot, CurveSet, LegendBox, filter_curves, show_options
from .estimate_parts import EstimateLine
from .train_parts import SKIPPED_WHY, STAGE_TITLES, TRAINING_STAGES, RunLog, StageRow


class TrainPage(QWidget):
    trainingFinished = Signal()

    def __init__(self, state: StudioState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.losses = CurveSet()
        self.evals = CurveSet()
        self.metric_name = "metric"
        self.shown_stage: str | None = None
        self.follow = True  # the curves follow the running stage until the user picks one
        self._running_stage: str | None = None

        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("startTraining")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopTraining")
        self.stop_button.setToolTip("Stops after the current step and saves a checkpoint: Resume continues from there.")
        self.until = QComboBox()
        for s in STAGES:
            self.until.addItem(f"{STAGE_TITLES[s]}" + (" (all)" if s == STAGES[-1] else ""), s)
        self.until.setCurrentIndex(len(STAGES) - 1)
        self.gpus = QComboBox()
        self.gpus.setObjectName("trainProcesses")
        n = gpu_count()
        if n == 0:
            self.gpus.addItem("CPU", 1)
            self.gpus.setToolTip("No NVIDIA GPU was found: training runs on this machine's CPU.")
            self.gpus.setEnabled(False)
        else:
            for k in range(1, n + 1):
                self.gpus.addItem(f"{k} GPU" + ("s" if k > 1 else ""), k)
            self.gpus.setToolTip(
                "More than one GPU runs the training under torchrun, one process per GPU; "
                "the batch size stays the same (it is split across them)."
            )
        self.summary = QLabel()
        self.summary.setStyleSheet(HINT_CSS)
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.start_button)
        top.addWidget(self.stop_button)
        top.addWidget(QLabel("Run until:"))
        top.addWidget(self.until)
        top.addWidget(QLabel("on"))
        top.addWidget(self.gpus)
        top.addWidget(self.summary, 1)
        self.estimate_line = EstimateLine(state)
        self.until.currentIndexChanged.connect(lambda _: self._update_buttons())

        stages_box = QGroupBox("Stages")
        grid = QGridLayout(stages_box)
        grid.setColumnStretch(1, 1)
        self.rows = {s: StageRow(grid, i, s) for i, s in enumerate(STAGES)}

        # one canvas for both plots; the sub-network legend they share sits beside it, outside the curves
        self.canvas = pg.GraphicsLayoutWidget()
        self.legend = LegendBox()
        self.loss_plot = CurvePlot(
            self.canvas.addPlot(row=0, col=0),
            "Training loss per sub-network",
            "loss",
            legend=self.legend,
            bounds=(0.0, None),
        )
        self.eval_plot = CurvePlot(
            self.canvas.addPlot(row=1, col=0), "Dev metric per sub-network (end of each epoch)", "metric", symbols=True
        )
        self.loss_plot.set_placeholder("One curve per sub-network appears here once training starts.")
        self.eval_plot.set_placeholder("The dev metric of every sub-network is drawn at the end of each epoch.")
        self.canvas.ci.layout.setRowStretchFactor(0, 3)
        self.canvas.ci.layout.setRowStretchFactor(1, 2)
        self.chance: float | None = None  # the dev metric of always predicting the majority class (or the mean)
        self.curve_stage = QComboBox()
        self.curve_stage.setObjectName("curveStage")
        # wide enough for the longest stage title from the start ("Width dis" was all that showed)
        self.curve_stage.setMinimumContentsLength(max(len(t) for t in STAGE_TITLES.values()))
        self.curve_stage.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.curve_stage.setToolTip("Which stage's curves to show; they follow the running stage by default.")
        self.curve_stage.activated.connect(self._pick_stage)
        # twelve curves on one plot are a tangle: one width (or one depth) at a time compares like with like
        self.curve_show = QComboBox()
        self.curve_show.setObjectName("curveShow")
        self.curve_show.setToolTip(
            "Show every sub-network's curves, or only those of one width (all its depths) or one depth."
        )
        self.curve_show.addItem("all sub-networks", "")
        self.curve_show.currentIndexChanged.connect(lambda _: self._redraw())
        curve_bar = QHBoxLayout()
        curve_bar.addWidget(QLabel("Curves of stage:"))
        curve_bar.addWidget(self.curve_stage)
        curve_bar.addSpacing(12)
        curve_bar.addWidget(QLabel("Show:"))
        curve_bar.addWidget(self.curve_show)
        curve_bar.addStretch(1)
        plots = QWidget()
        pl = QVBoxLayout(plots)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addLayout(curve_bar)
        chart_row = QHBoxLayout()
        chart_row.addWidget(self.canvas, 1)
        chart_row.addWidget(self.legend)
        pl.addLayout(chart_row, 1)

        self.log = RunLog()
        log_box = QGroupBox("Log")
        QVBoxLayout(log_box).addWidget(self.log)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(plots)
        split.addWidget(log_box)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([800, 300])

        # shown when the fine-tuned teacher is no better than the constant prediction: distilling it is wasted time
        self.teacher_banner = QLabel()
        self.teacher_banner.setObjectName("teacherBanner")
        self.teacher_banner.setStyleSheet(BANNER_CSS)
        self.teacher_banner.setWordWrap(True)
        self.teacher_banner.hide()

        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.estimate_line)
        lay.addWidget(self.teacher_banner)
        lay.addWidget(stages_box)
        lay.addWidget(split, 1)

        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.handle = None  # the training job this page follows
        state.runner.jobStarted.connect(self._on_job)
        state.runner.busyChanged.connect(lambda _: self._update_buttons())
        state.projectChanged.connect(self._on_project_changed)
        state.projectUpdated.connect(lambda _: self._refresh_rows())
        self._on_project_changed(state.project)

    # ---- actions -------------------------------------------------------------------------------
    def start(self) -> None:
        project = self.state.project
        if project is None:
            return
        from dynastudio.core.requests import RunRequest

        self.state.start_job(
            self.window(),
            "run",
            project.root,
            RunRequest(until=self.until.currentData()),
            processes=run_processes(project.config.train.device, int(self.gpus.currentData() or 1)),
        )

    def _on_job(self, handle) -> None:
        """Follow every training the runner starts or attaches to (reopened projects included)."""
        if not handle.trains:
            return
        self.follow = True
        self.handle = h = handle
        b = h.bridge
        line = self.estimate_line
        line.run_started(getattr(h.request, "until", None))
        b.runStarted.connect(lambda e: line.run_began_at(e.started, b.replaying))
        b.stageStarted.connect(line.stage_started)
        b.steps.connect(line.steps)
        b.stageProgress.connect(line.stage_progress)
        b.stageEnded.connect(line.stage_ended)
        h.ended.connect(line.run_ended)
        b.runStarted.connect(self._on_run_started)
        b.stopAcknowledged.connect(
            lambda e: self._log("the run saw the stop request: it finishes this step, saves a checkpoint and exits")
        )
        b.stageStarted.connect(self._on_stage_started)
        b.stageEnded.connect(self._on_stage_ended)
        b.stageProgress.connect(self._on_stage_progress)
        b.steps.connect(self._on_steps)
        b.progress.connect(self._on_progress)
        b.evalEnded.connect(self._on_eval)
        b.checkpointSaved.connect(self._on_checkpoint)
        b.log.connect(self._on_log)
        b.replayChanged.connect(self._on_replay)
        b.teacherChecked.connect(self._on_teacher_checked)
        h.started.connect(self._on_job_started)
        h.finished.connect(self._on_job_finished)
        h.cancelled.connect(self._on_job_cancelled)
        h.failed.connect(self._on_job_errored)
        h.ended.connect(self._on_job_ended)

    def stop(self) -> None:
        """First press: the run stops after its current step, saving a checkpoint. Second press: it ends now."""
        if not self.is_training():
            return
        if self.handle.stop_requested:
            self._log("ending the run now: the progress since its last checkpoint is lost")
            self.stop_button.setText("Ending…")
            self.stop_button.setEnabled(False)
            self.handle.stop()
            return
        self._log("stopping after the current step (a checkpoint is saved)… press Stop now to end it at once")
        self.handle.stop()
        self.stop_button.setText("Stop now")
        self.stop_button.setToolTip("Ends the run at once: the progress since its last checkpoint is lost.")

    def is_training(self) -> bool:
        return self.handle is not None and self.handle.status == "running"

    # ---- project -------------------------------------------------------------------------------
    def _on_project_changed(self, project) -> None:
        self.losses.clear()
        self.evals.clear()
        self.chance = None
        self._totals: dict[str, int] = {}
        self._skip_said: set[str] = set()  # stages whose skip the log said already (said once, not twice)
        self.shown_stage = None
        self.log.clear()
        if project is not None:
            self._replay_history(project)
        self._refresh_rows()
        self._show_stage(self._latest_stage())

    def _replay_history(self, project) -> None:
        """Draw the curves of earlier runs from metrics.jsonl, so reopening a project shows its training."""
        for rec in project.read_metrics():
            kind, stage = rec.get("kind"), rec.get("stage")
            if kind == "step" and isinstance(rec.get("losses"), dict):
                self.losses.add(stage, int(rec.get("step", 0)), rec["losses"])
            elif kind == "eval" and isinstance(rec.get("results"), dict):
                self.evals.add(stage, int(rec.get("step", 0)), rec["results"])
                self.metric_name = rec.get("metric", self.metric_name)
                if isinstance(rec.get("chance"), (int, float)):
                    self.chance = float(rec["chance"])
        if project.metrics_path.is_file():
            self._log(
                f"opened {project.root}: {sum(len(v[0]) for d in self.losses.data.values() for v in d.values())} "
                f"logged loss points"
            )

    def _on_teacher_checked(self, e: TeacherChecked) -> None:
        self._show_teacher_check({"clearly_better": e.clearly_better, "advice": e.advice})

    def _show_teacher_check(self, check: dict | None) -> None:
        """The banner, from the finetune stage's check (state.json) or the live event; hidden when the teacher is fine."""
        if not isinstance(check, dict) or check.get("clearly_better", True):
            self.teacher_banner.hide()
            return
        advice = str(check.get("advice") or "the teacher is not clearly better than the constant prediction")
        first = (
            "Stop the run before it spends its time distilling this teacher. "
            if self.is_training()
            else "Resuming would distill this teacher as it is. "
        )
        self.teacher_banner.setText(
            f"<b>The teacher learned too little to be worth distilling.</b> {first}{html.escape(advice[0].upper() + advice[1:])}."
        )
        self.teacher_banner.show()

    def _refresh_rows(self) -> None:
        project = self.state.project
        info = project.stage_info("finetune") if project is not None else {}
        self._show_teacher_check(info.get("teacher_check") if info.get("done") else None)
        if self.is_training():
            return
        for stage, row in self.rows.items():
            row.idle(self.state.stage_view(stage))
        self._update_buttons()

    def _update_buttons(self) -> None:
        project, busy = self.state.project, self.state.runner.is_running()
        training = self.is_training()
        done = self.state.all_done()
        started = project is not None and any(self.state.stage_view(s).state != "pending" for s in STAGES)
        self.start_button.setText("All stages done" if done else ("Resume training" if started else "Start training"))
        self.start_button.setEnabled(project is not None and not busy and not done)
        self.stop_button.setEnabled(
            training and not (self.handle.stop_requested and self.stop_button.text() != "Stop now")
        )
        if not training:
            self.stop_button.setText("Stop")
            self.stop_button.setToolTip(
                "Stops after the current step and saves a checkpoint: Resume continues from there."
            )
        self.until.setEnabled(not training)
        self.gpus.setEnabled(not training and self.gpus.count() > 1)
        self.estimate_line.until = self.until.currentData()
        self.estimate_line.refresh(training)
        if project is None:
            self.summary.setText("Open or create a project first.")
        elif training:
            self.summary.setText(
                "Training in its own process: the window stays usable, and closing it can leave the "
                "run going; Stop keeps the project resumable."
            )
        elif busy:
            self.summary.setText(f"Waiting for the running job ({self.state.runner.current.title}) to end.")
        elif done:
            self.summary.setText("Every stage is done: see the Explore page.")
        else:
            t = project.config.train
            self.summary.setText(
                f"profile {t.profile}: {len(t.width_mults)} widths × {len(t.depth_mults)} depths, "
                f"batch {t.batch_size}, sequence {t.max_seq_length}"
            )

    # ---- job lifecycle -------------------------------------------------------------------------
    def _on_job_started(self) -> None:
        if getattr(self.handle, "command", None):  # launched here (not reattached): the command is in its log file
            until = getattr(self.handle.request, "until", None)
            log_path = getattr(self.handle, "log_path", None)
            self._log(
                "starting the training"
                + (f" (until: {STAGE_TITLES.get(until, until)})" if until and until != STAGES[-1] else "")
                + " in a process of its own"
                + (f"; its output: {log_path}" if log_path else "")
            )
        self._update_buttons()

    def _on_run_started(self, e) -> None:
        launched = getattr(self.handle, "launch_id", None) == e.launch_id and e.launch_id is not None
        procs = f", {e.world_size} processes" if e.world_size > 1 else ""
        self._log(
            f"training {'started' if launched else 'is running'}: process {e.pid} on {e.host}{procs}, since "
            f"{time.strftime('%H:%M:%S', time.localtime(e.started))}",
            at=e.started,
        )

    def _on_job_ended(self, kind: str) -> None:
        if kind == "detached":
            self._log("no longer following the run: it goes on in the background")
            self._running_stage = None
            self._refresh_rows()

    def _on_job_finished(self, result) -> None:
        ran = ", ".join(result.ran)
        self._log(f"training finished ({ran or 'nothing left to run'})")
        self._running_stage = None
        self._refresh_rows()
        self.trainingFinished.emit()

    def _on_job_cancelled(self) -> None:
        self._log("stopped: the project is saved; Resume continues from the last checkpoint")
        self._running_stage = None
        self._refresh_rows()

    def _on_job_errored(self, info) -> None:
        self._log(f"error: {info.message}")
        self._running_stage = None
        self._refresh_rows()
        show_error(self.window(), info, "Training failed")

    # ---- events --------------------------------------------------------------------------------
    def _on_stage_started(self, e: StageStarted) -> None:
        if e.stage in self.rows:
            self.rows[e.stage].started(e)
        self._skip_said.discard(e.stage)
        if e.total_steps == 0:  # a stage about to be skipped: its skip is the line to log
            return
        if e.stage not in TRAINING_STAGES:  # rewire, evaluate: no curves
            self._log(f"{e.stage}: started")
            return
        self._running_stage = e.stage
        self._totals[e.stage] = e.total_steps
        self.losses.restart(e.stage, e.resumed_from_step)
        self.evals.restart(e.stage, e.resumed_from_step)
        if e.stage == self.shown_stage or self.follow:
            self._show_stage(e.stage if self.follow else self.shown_stage)
        self._log(
            f"{e.stage}: started, {e.total_steps} steps"
            + (f", resumed at {e.resumed_from_step}" if e.resumed_from_step else "")
        )

    def _on_stage_ended(self, e: StageEnded) -> None:
        if e.stage in self.rows:
            self.rows[e.stage].ended(e)
        if not e.skipped:
            self._log(f"{e.stage}: done in {fmt_seconds(e.seconds)}")
        elif e.stage not in self._skip_said:  # the engine's own "<stage>: skipped (why)" line said it already
            why = SKIPPED_WHY.get(e.stage, ("",))[0]
            self._log(f"{e.stage}: skipped" + (f" ({why})" if why else ""))

    def _on_stage_progress(self, e: StageProgress) -> None:
        if e.stage in self.rows:
            self.rows[e.stage].progressed(e)

    def _on_steps(self, batch: list[StepEnded]) -> None:
        for e in batch:
            self.losses.add(e.stage, e.step, e.losses)
        stage = batch[-1].stage
        if self.follow and stage != self.shown_stage:
            self._show_stage(stage)
        elif stage == self.shown_stage:
            self._sync_show_combo()
            self.loss_plot.show_curves(self._curves(self.losses, stage))
        self._sync_stage_combo()

    def _on_progress(self, e: StepEnded) -> None:
        if e.stage in self.rows:
            self.rows[e.stage].stepped(e)

    def _on_eval(self, e: EvalEnded) -> None:
        self.metric_name = e.metric_name
        if e.chance is not None:
            self.chance = e.chance
        self._log(
            f"{e.stage} step {e.step}: dev {e.metric_name} "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(e.results.items(), key=lambda kv: label_sort_key(kv[0])))
        )
        if e.stage == "evaluate":
            return  # the final grid is the Explore page's job
        self.evals.add(e.stage, e.step, e.results)
        if e.stage == self.shown_stage:
            self._frame_eval_plot(e.stage)
            self._sync_show_combo()
            self.eval_plot.show_curves(self._curves(self.evals, e.stage))

    def _on_checkpoint(self, e: CheckpointSaved) -> None:
        self._log(f"{e.stage}: checkpoint at step {e.step}")

    def _on_log(self, e: LogMessage) -> None:
        stage = e.text.split(": skipped", 1)[0] if ": skipped" in e.text else None
        if stage in self.rows:
            self._skip_said.add(stage)
        self._log(e.text if e.level == "info" else f"{e.level}: {e.text}")

    def _on_replay(self, on: bool) -> None:
        if on:
            self._log(
                "following a run that was already going; its events so far (a time where one was recorded):",
                at=time.time(),
            )
        else:
            self._log("following it live")

    # ---- curves --------------------------------------------------------------------------------
    def _latest_stage(self) -> str | None:
        stages = [s for s in self.losses.stages()]
        return stages[-1] if stages else None

    def _stage_total(self, stage: str | None) -> int | None:
        """The stage's last step (from its start event, or state.json / its checkpoint), so x runs 0..total."""
        if stage is None:
            return None
        return self._totals.get(stage) or self.state.stage_view(stage).total

    def _frame_eval_plot(self, stage: str | None) -> None:
        self.eval_plot.setLabel("left", f"dev {self.metric_name}")
        self.eval_plot.bounds = METRIC_BOUNDS.get(self.metric_name, (None, None))
        self.eval_plot.x_end = self._stage_total(stage)
        self.eval_plot.set_chance(self.chance, chance_name(self.metric_name))

    def _curves(self, curves: CurveSet, stage: str | None) -> dict:
        """The stage's curves that the "Show:" choice keeps."""
        return filter_curves(curves.data.get(stage, {}), self.curve_show.currentData() or "") if stage else {}

    def _sync_show_combo(self) -> None:
        """Offer each width and depth of the shown stage's sub-networks; keep the user's choice while it exists."""
        stage = self.shown_stage
        labels = set(self.losses.labels(stage)) | set(self.evals.labels(stage)) if stage else set()
        options = show_options(labels)
        current = [(self.curve_show.itemText(i), self.curve_show.itemData(i)) for i in range(self.curve_show.count())]
        if current == options:
            return
        key = self.curve_show.currentData() or ""
        self.curve_show.blockSignals(True)
        self.curve_show.clear()
        for text, data in options:
            self.curve_show.addItem(text, data)
        self.curve_show.setCurrentIndex(max(0, self.curve_show.findData(key)))
        self.curve_show.blockSignals(False)
        self.curve_show.setEnabled(len(options) > 1)

    def _redraw(self) -> None:
        """The shown stage's curves again (the "Show:" choice changed)."""
        self._show_stage(self.shown_stage)

    def _show_stage(self, stage: str | None) -> None:
        self.shown_stage = stage
        self._sync_show_combo()
        self.loss_plot.x_end = self._stage_total(stage)
        self.loss_plot.show_curves(self._curves(self.losses, stage))
        self._frame_eval_plot(stage)
        self.eval_plot.show_curves(self._curves(self.evals, stage))
        self.loss_plot.setTitle(
            f"Training loss per sub-network — {STAGE_TITLES.get(stage, stage)}"
            if stage
            else "Training loss per sub-network",
            size="11pt",
        )
        self._sync_stage_combo()

    def _sync_stage_combo(self) -> None:
        stages = self.losses.stages()
        if self.shown_stage and self.shown_stage not in stages:  # a stage just started, no step yet: name it still
            stages = [s for s in STAGES if s in stages or s == self.shown_stage]
        if [self.curve_stage.itemData(i) for i in range(self.curve_stage.count())] != stages:
            self.curve_stage.blockSignals(True)
            self.curve_stage.clear()
            for s in stages:
                self.curve_stage.addItem(STAGE_TITLES.get(s, s), s)
            self.curve_stage.blockSignals(False)
        self.curve_stage.setEnabled(bool(stages))
        i = self.curve_stage.findData(self.shown_stage)
        if i >= 0 and i != self.curve_stage.currentIndex():
            self.curve_stage.setCurrentIndex(i)

    def _pick_stage(self, index: int) -> None:
        stage = self.curve_stage.itemData(index)
        # picking the running stage again hands control back to "follow"
        self.follow = stage == self._running_stage or not self.is_training()
        self._show_stage(stage)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.estimate_line.refresh(self.is_training())  # the estimate is timed once the page is seen

    def closeEvent(self, event) -> None:
        self.estimate_line.shut_down()
        super().closeEvent(event)

    def shut_down(self) -> None:
        """The window closes: end the estimate's timing job (a training goes on by itself)."""
        self.estimate_line.shut_down()

    def _log(self, text: str, at: float | None = None) -> None:
        # a replayed event (a reattached run's backlog) without a time of its own is shown without one
        self.log.add(text, at, untimed=self.handle is not None and self.handle.bridge.replaying)


if __name__ == "__main__":
    from ..preview import run_preview

    run_preview(TrainPage)
