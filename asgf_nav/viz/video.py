"""Episode videos: egocentric RGB, depth, binaural spectrogram and a top-down inset, one frame per pose.

MP4 files carry the binaural audio the agent heard: for every frame the first ``1 / fps`` seconds of the
received signal at that pose (the sound convolved with the baked RIR; silence where the frame outlasts
it), muxed in with the ffmpeg binary that imageio-ffmpeg ships. GIF files have no audio track. A frame is
``FIGSIZE`` inches at ``dpi`` dots per inch (1152 x 320 pixels at the default 80).
"""

from __future__ import annotations

import logging
import math
import subprocess
from pathlib import Path

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
import soundfile
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from asgf_nav.eval.evaluator import EpisodeRecord
from asgf_nav.io import atomic_write, scratch_file_beside
from asgf_nav.logging_utils import bar_pacing
from asgf_nav.scenes.scene import Scene
from asgf_nav.tasks.navigation import ACTION_NAMES
from asgf_nav.tasks.spectrogram import binaural_audio_np, spectrogram_np
from asgf_nav.tasks.world import TaskScene, TaskWorld
from asgf_nav.viz.trajectories import draw_episode

logger = logging.getLogger(__name__)

FIGSIZE = (14.4, 4.0)  # inches of one frame: four panels side by side


def received_audio(world: TaskWorld, task_scene: TaskScene, record: EpisodeRecord, node: int, yaw: int) -> np.ndarray:
    """(sample_rate, 2) binaural signal at (node, yaw) for the episode's sound and goal."""
    rir = task_scene.rir(node, record.goal_node, yaw)
    return binaural_audio_np(world.sound(record.sound), rir, world.sample_rate)


def _frame(canvas: FigureCanvasAgg) -> np.ndarray:
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_frames(
    scene: Scene, world: TaskWorld, record: EpisodeRecord, max_frames: int | None = None, dpi: int = 80
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """RGB frames (``FIGSIZE`` times ``dpi`` pixels) and the matching binaural signals, one per pose of
    ``record.path``."""
    task_scene = world.scene(record.scene)
    poses = record.path[:max_frames] if max_frames else record.path
    fig = Figure(figsize=FIGSIZE, dpi=dpi)
    canvas = FigureCanvasAgg(fig)  # pixels without pyplot: the caller's backend (a notebook's) stays as it was
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1.3, 1.2]})
    sound = world.sound(record.sound)
    spectrograms = [spectrogram_np(sound, task_scene.rir(n, record.goal_node, y), world.sample_rate) for n, y in poses]
    loudest = max([float(np.max(spec)) for spec in spectrograms] + [1e-6])  # one scale: loudness is the cue
    frames, audio = [], []
    for k, (node, yaw) in enumerate(tqdm(poses, desc=f"video ep {record.episode_id}", unit="frame", **bar_pacing())):
        signal = received_audio(world, task_scene, record, node, yaw)
        audio.append(signal)
        for ax in axes:
            ax.clear()
        if scene.has_vision:
            axes[0].imshow(np.asarray(scene.rgb[node, yaw]))
            axes[1].imshow(np.asarray(scene.depth[node, yaw], dtype=np.float32), cmap="viridis", vmin=0, vmax=10)
        else:
            for ax in axes[:2]:
                ax.text(0.5, 0.5, "no vision stage", ha="center", va="center", transform=ax.transAxes)
        axes[0].set_title("RGB", fontsize=9)
        axes[1].set_title("depth (0-10 m)", fontsize=9)
        spec = spectrograms[k]
        axes[2].imshow(
            np.concatenate([spec[..., 0], np.full((2, spec.shape[1]), np.nan), spec[..., 1]]),
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=0.0,
            vmax=loudest,
        )
        axes[2].set_title("spectrogram, left (bottom) / right (top):\none scale for the episode", fontsize=9)
        draw_episode(axes[3], scene, record, title="", upto=k + 1, show_graph=False)
        axes[3].set_xlabel("")
        axes[3].set_ylabel("")
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        action = ACTION_NAMES[record.actions[k]] if k < len(record.actions) else "end"
        fig.suptitle(
            f"{record.scene} ep {record.episode_id} '{record.sound}'  step {k}/{len(record.actions)}  next: {action}",
            fontsize=10,
        )
        if k == 0:  # laid out once, on the first frame, to where it settles: per frame the panels crept for a while
            for _ in range(3):
                fig.tight_layout(rect=(0, 0, 1, 0.93))
                canvas.draw()
        frames.append(_frame(canvas))
    return frames, audio


def audio_track(signals: list[np.ndarray], sample_rate: int, fps: float) -> np.ndarray:
    """First 1/fps seconds of each pose's signal, concatenated and normalised to a 0.9 peak.

    Each chunk is one frame long, rounded up to whole samples: a signal shorter than a frame (fps < 1 with
    1 s sounds) is padded with silence, so the track lasts at least as long as the video and ffmpeg's
    ``-shortest`` cuts no frame (rounded to the nearest sample, 13 or 29.97 fps made the track shorter and lost
    the episode's last frames); the drift is under a sample per frame.
    """
    length = math.ceil(sample_rate / fps - 1e-9)  # the tolerance: 44100 / 4.0 computed as 11025.000000001
    chunks = []
    for signal in signals:
        chunk = np.zeros((length, *np.shape(signal)[1:]), dtype=np.float32)
        head = np.asarray(signal[:length], dtype=np.float32)
        chunk[: len(head)] = head
        chunks.append(chunk)
    track = np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.float32)
    peak = float(np.abs(track).max()) if track.size else 0.0
    return track * (0.9 / peak) if peak > 0 else track


def write_video(
    path: str | Path,
    scene: Scene,
    world: TaskWorld,
    record: EpisodeRecord,
    fps: float = 2.0,
    max_frames: int | None = 200,
    with_audio: bool = True,
    dpi: int = 80,
) -> Path:
    """Write the episode as MP4 (with audio unless ``with_audio`` is False) or GIF, chosen by the suffix;
    ``dpi`` sets the frame size (see ``render_frames``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"video path {path} must end in .mp4 or .gif")
    frames, signals = render_frames(scene, world, record, max_frames, dpi)

    # Written atomically, its intermediate files beside it as hidden temporaries of ``path``: an interrupted
    # write never leaves a truncated video under the final name, and what one killed outright leaves is
    # removed by io.remove_stale_temporaries_of(path). The temporaries' suffix is .tmp: formats are named.
    def write(tmp: Path) -> None:
        if suffix == ".gif":
            imageio.mimsave(tmp, frames, format="GIF", duration=1000.0 / fps, loop=0)
            return
        with scratch_file_beside(path) as silent, scratch_file_beside(path) as wav:
            height, width = frames[0].shape[:2]
            writer = imageio_ffmpeg.write_frames(  # imageio's own writer refuses a path without .mp4
                str(silent if with_audio else tmp),
                (width, height),
                fps=fps,
                codec="libx264",
                quality=7,
                macro_block_size=16,
                pix_fmt_out="yuv420p",
                output_params=["-f", "mp4"],
            )
            try:
                writer.send(None)  # the generator starts ffmpeg
                for frame in frames:
                    writer.send(np.ascontiguousarray(frame))
            finally:  # ends ffmpeg on an error too, not only when the traceback is freed
                writer.close()
            if with_audio:
                track = audio_track(signals, world.sample_rate, fps)
                soundfile.write(wav, track, world.sample_rate, subtype="PCM_16", format="WAV")
                mux_audio(silent, wav, tmp)

    return atomic_write(path, write)


def mux_audio(video: Path, wav: Path, out: Path) -> None:
    """Copy the video stream and add the WAV as an AAC track with imageio-ffmpeg's ffmpeg binary."""
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-i",
        str(video),
        "-i",
        str(wav),
        "-c:v",
        "copy",
        "-c:a",
        "aac",
        "-b:a",
        "160k",
        "-shortest",
        "-f",
        "mp4",  # ``out`` may be a temporary without the .mp4 suffix
        str(out),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed to mux {wav} into {out}: {result.stderr.strip()}")
