"""The curated list of sound-bank clips: where each one comes from, its category, instance and licence.

The bank mixes openly licensed recordings shipped by Debian packages with clips this project renders
itself (General MIDI instruments through FluidSynth, espeak-ng speech, procedural models in
``asgf_nav.sounds.synth``). A clip's *instance* names the physical source that produced it (a recording,
an instrument, a voice); clips of the same category with different instances are what a selective
localisation model uses as a reference prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asgf_nav.sounds.synth import Note

FREEDESKTOP = "/usr/share/sounds/freedesktop/stereo"
LOMIRI = "/usr/share/sounds/lomiri"
OXYGEN = "/usr/share/sounds"
ASTERISK = "/usr/share/asterisk/sounds/en_US_f_Allison"

LICENSE_URLS = {
    "GPL-2.0-only": "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html",
    "GPL-2.0-or-later": "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html",
    "LGPL-3.0-or-later": "https://www.gnu.org/licenses/lgpl-3.0.html",
    "CC-BY-3.0": "https://creativecommons.org/licenses/by/3.0/",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "CC-BY-SA-3.0": "https://creativecommons.org/licenses/by-sa/3.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "MIT": "https://opensource.org/license/mit",
}


@dataclass(frozen=True)
class DebianFile:
    """A recording installed by a Debian package; copyright and licence as in its debian/copyright."""

    package: str
    path: str
    copyright: str
    license: str


@dataclass(frozen=True)
class MidiRender:
    """Notes on one General MIDI program of the FluidR3_GM soundfont, rendered dry by FluidSynth."""

    program: int
    notes: tuple[Note, ...]
    percussion: bool = False


@dataclass(frozen=True)
class Speech:
    """An utterance spoken by an espeak-ng voice."""

    voice: str
    text: str
    words_per_minute: int = 160


@dataclass(frozen=True)
class Procedural:
    """A procedural model from ``asgf_nav.sounds.synth.PROCEDURAL`` with a fixed seed."""

    generator: str
    seed: int


Source = DebianFile | MidiRender | Speech | Procedural


@dataclass(frozen=True)
class ClipSpec:
    name: str
    category: str
    instance: str
    source: Source = field(repr=False)


def _melody(pitches: list[int], step: float, velocity: int = 96, legato: float = 0.95) -> tuple[Note, ...]:
    return tuple((i * step, step * legato, p, velocity) for i, p in enumerate(pitches))


def _chords(chords: list[list[int]], step: float, velocity: int = 90, spread: float = 0.0) -> tuple[Note, ...]:
    return tuple(
        (i * step + j * spread, step - j * spread, p, velocity)
        for i, chord in enumerate(chords)
        for j, p in enumerate(chord)
    )


def _held(pitch: int, duration: float = 1.3, velocity: int = 110) -> tuple[Note, ...]:
    return ((0.0, duration, pitch, velocity),)


def _fd(file: str, copyright: str, license: str) -> DebianFile:
    return DebianFile("sound-theme-freedesktop", f"{FREEDESKTOP}/{file}", copyright, license)


def _lomiri(file: str, copyright: str = "2013, Canonical Ltd.", license: str = "CC-BY-SA-3.0") -> DebianFile:
    return DebianFile("lomiri-sounds", f"{LOMIRI}/{file}", copyright, license)


def _oxygen(file: str) -> DebianFile:
    return DebianFile("oxygen-sounds", f"{OXYGEN}/{file}", "2008, Nuno Filipe Povoa", "LGPL-3.0-or-later")


def _asterisk(file: str) -> DebianFile:
    return DebianFile("asterisk-core-sounds-en-wav", f"{ASTERISK}/{file}", "2003-2010, Allison Smith", "CC-BY-SA-3.0")


SANDRAS = "Damien Sandras <dsandras@seconix.com>"
BUKVIC = "Ivica Bukvic"
DUARTE = "2018, Mauricio Duarte"
DRUM_ROCK = tuple(
    [(i * 0.125, 0.1, 42, 80) for i in range(10)]
    + [(t, 0.1, 36, 120) for t in (0.0, 0.375, 0.75)]
    + [(t, 0.1, 38, 110) for t in (0.25, 0.75)]
)
DRUM_ROLL = tuple((i * 0.04, 0.035, 38, 70 + (i * 3) % 50) for i in range(30))
CONGAS = tuple(
    (t, 0.12, p, 100) for t, p in zip([0, 0.15, 0.3, 0.5, 0.65, 0.8, 0.9, 1.0], [63, 62, 64, 63, 62, 64, 63, 64])
)
METRONOME = tuple((i * 0.25, 0.05, 76 if i % 4 == 0 else 77, 110) for i in range(5))

CLIPS: tuple[ClipSpec, ...] = (
    # telephone: the heard sound and other telephones
    ClipSpec(
        "telephone",
        "telephone",
        "sandras-incoming-call",
        _fd("phone-incoming-call.oga", SANDRAS, "GPL-2.0-or-later"),
    ),
    ClipSpec("telephone_oxygen", "telephone", "oxygen-phone-ring", _oxygen("Oxygen-Im-Phone-Ring.ogg")),
    ClipSpec("telephone_gm", "telephone", "fluidr3-telephone-ring", MidiRender(124, _held(60))),
    ClipSpec("telephone_bell", "telephone", "twin-gong-bell", Procedural("telephone_bell", 101)),
    # telephone line signals
    ClipSpec(
        "phone_busy",
        "phone_signal",
        "sandras-busy",
        _fd("phone-outgoing-busy.oga", SANDRAS, "GPL-2.0-or-later"),
    ),
    ClipSpec(
        "phone_ringback",
        "phone_signal",
        "sandras-ringback",
        _fd("phone-outgoing-calling.oga", SANDRAS, "GPL-2.0-or-later"),
    ),
    ClipSpec("phone_dtmf", "phone_signal", "dtmf-keypad", Procedural("dtmf_digits", 102)),
    # alarms
    ClipSpec(
        "alarm_clock",
        "alarm",
        "corsica-alarm-clock",
        _fd("alarm-clock-elapsed.oga", "Tim/corsica_s", "CC-BY-SA-3.0"),
    ),
    ClipSpec("alarm_clock_lomiri", "alarm", "lomiri-alarm-clock", _lomiri("ringtones/Alarm clock.ogg")),
    ClipSpec("alarm_synth", "alarm", "lomiri-alarm-synth", _lomiri("ringtones/Alarm synth.ogg")),
    ClipSpec("alarm_digital", "alarm", "digital-alarm-clock", Procedural("digital_alarm", 103)),
    # bells
    ClipSpec("bell", "bell", "boulanger-bell", _fd("bell.oga", "Dr. Richard Boulanger et al", "CC-BY-3.0")),
    ClipSpec("tubular_bells", "bell", "fluidr3-tubular-bells", MidiRender(14, _melody([72, 67, 69, 60], 0.3))),
    ClipSpec("tinkle_bell", "bell", "fluidr3-tinkle-bell", MidiRender(112, _melody([84, 88, 91, 88, 84, 79], 0.17))),
    # chimes
    ClipSpec("wind_chime", "chime", "lomiri-wind-chime", _lomiri("ringtones/Wind chime.ogg")),
    ClipSpec("doorbell", "chime", "ding-dong-doorbell", Procedural("doorbell", 104)),
    ClipSpec("glockenspiel", "chime", "fluidr3-glockenspiel", MidiRender(9, _melody([84, 88, 91, 96, 91], 0.2))),
    # cameras
    ClipSpec(
        "camera_shutter",
        "camera",
        "horsthorstensen-shutter",
        _fd("camera-shutter.oga", "freesound user horsthorstensen", "CC-BY-SA-3.0"),
    ),
    ClipSpec(
        "camera_click",
        "camera",
        "jdaniel1999-click",
        _lomiri(
            "camera/click/camera_click.ogg",
            '2015, "jdaniel1999" https://freesound.org/people/jdaniel1999/sounds/376205/',
            "CC0-1.0",
        ),
    ),
    ClipSpec(
        "camera_focus",
        "camera",
        "kwahmah-focus",
        _lomiri(
            "camera/focus/camera_focus.ogg",
            '2015, "kwahmah_02 of freesound.org" https://freesound.org/people/kwahmah_02/sounds/264103/',
            "CC-BY-3.0",
        ),
    ),
    # notifications
    ClipSpec(
        "message_instant",
        "notification",
        "sandras-message",
        _fd("message-new-instant.oga", SANDRAS, "GPL-2.0-or-later"),
    ),
    ClipSpec("message", "notification", "bukvic-message", _fd("message.oga", BUKVIC, "CC-BY-SA-3.0")),
    ClipSpec("notification_amsterdam", "notification", "lomiri-amsterdam", _lomiri("notifications/Amsterdam.ogg")),
    ClipSpec("notification_positive", "notification", "lomiri-positive", _lomiri("notifications/Positive.ogg")),
    # error and warning alerts
    ClipSpec(
        "suspend_error",
        "error_alert",
        "redhat-suspend-error",
        _fd("suspend-error.oga", "Red Hat, Inc.", "CC-BY-SA-3.0"),
    ),
    ClipSpec("error_critical", "error_alert", "oxygen-error-critical", _oxygen("Oxygen-Sys-App-Error-Critical.ogg")),
    ClipSpec("low_battery", "error_alert", "lomiri-low-battery", _lomiri("notifications/LowBattery.ogg")),
    # device plug / unplug
    ClipSpec("device_added", "device_plug", "bukvic-device-added", _fd("device-added.oga", BUKVIC, "CC-BY-SA-3.0")),
    ClipSpec(
        "device_removed",
        "device_plug",
        "bukvic-device-removed",
        _fd("device-removed.oga", BUKVIC, "CC-BY-SA-3.0"),
    ),
    # short fanfares
    ClipSpec(
        "service_login",
        "fanfare",
        "pidgin-login",
        _fd("service-login.oga", "The Pidgin developers", "GPL-2.0-only"),
    ),
    ClipSpec("login_oxygen", "fanfare", "oxygen-log-in", _oxygen("Oxygen-Sys-Log-In.ogg")),
    # recorded speech
    ClipSpec("speech_hello_world", "speech_recorded", "allison-hello-world", _asterisk("hello-world.wav")),
    ClipSpec("speech_try_again", "speech_recorded", "allison-try-again", _asterisk("please-try-again.wav")),
    ClipSpec("speech_one_moment", "speech_recorded", "allison-one-moment", _asterisk("one-moment-please.wav")),
    ClipSpec(
        "speech_front_left",
        "speech_recorded",
        "alsa-front-left",
        _fd("audio-channel-front-left.oga", "The ALSA developers", "GPL-2.0-or-later"),
    ),
    # synthetic English speech
    ClipSpec(
        "speech_us_male",
        "speech_synthetic",
        "espeak-en-us-m1",
        Speech("en-us+m1", "Hello, is anybody there? Can you hear me?"),
    ),
    ClipSpec(
        "speech_uk_female",
        "speech_synthetic",
        "espeak-en-gb-f3",
        Speech("en-gb+f3", "The kettle is boiling in the kitchen."),
    ),
    ClipSpec(
        "speech_scottish_male",
        "speech_synthetic",
        "espeak-en-scotland-m3",
        Speech("en-gb-scotland+m3", "Please come to the living room right now."),
    ),
    # synthetic speech in other languages
    ClipSpec(
        "speech_german",
        "speech_foreign",
        "espeak-de-f2",
        Speech("de+f2", "Guten Morgen, wie geht es dir heute?"),
    ),
    ClipSpec("speech_french", "speech_foreign", "espeak-fr-m2", Speech("fr+m2", "Bonjour, le dîner est prêt.")),
    ClipSpec(
        "speech_spanish",
        "speech_foreign",
        "espeak-es-f1",
        Speech("es+f1", "Hola, ¿dónde estás? Te estoy buscando."),
    ),
    # pianos (two clips of the same instrument share an instance)
    ClipSpec("melody_piano", "piano", "lomiri-melody-piano", _lomiri("ringtones/Melody piano.ogg")),
    ClipSpec("piano_melody", "piano", "fluidr3-grand-piano", MidiRender(0, _melody([60, 64, 67, 72, 67, 64], 0.18))),
    ClipSpec(
        "piano_chords",
        "piano",
        "fluidr3-grand-piano",
        MidiRender(0, _chords([[48, 60, 64, 67], [53, 60, 65, 69]], 0.5)),
    ),
    ClipSpec("electric_piano", "piano", "lomiri-rhodes", _lomiri("notifications/Rhodes.ogg")),
    # tuned mallet percussion
    ClipSpec("glass_marimba", "mallet", "lomiri-glass-marimba", _lomiri("ringtones/Glass marimba.ogg")),
    ClipSpec("marimbach", "mallet", "lomiri-marimbach", _lomiri("ringtones/Marimbach.ogg")),
    ClipSpec("marimba", "mallet", "fluidr3-marimba", MidiRender(12, _melody([67, 71, 74, 79, 74, 71, 67], 0.15))),
    # harps and plucked instruments
    ClipSpec("harp_arpeggio", "plucked", "lomiri-harp", _lomiri("ringtones/Harp arp.ogg")),
    ClipSpec("koto_chords", "plucked", "lomiri-koto", _lomiri("ringtones/Koto chords.ogg")),
    ClipSpec("harp", "plucked", "fluidr3-harp", MidiRender(46, _melody([55, 59, 62, 67, 71, 74, 79], 0.14))),
    # guitars
    ClipSpec(
        "guitar_nylon",
        "guitar",
        "fluidr3-nylon-guitar",
        MidiRender(24, _melody([52, 57, 60, 64, 60, 57], 0.18)),
    ),
    ClipSpec(
        "guitar_steel",
        "guitar",
        "fluidr3-steel-guitar",
        MidiRender(25, _chords([[40, 47, 52, 56, 59, 64], [45, 52, 57, 61, 64]], 0.5, spread=0.015)),
    ),
    ClipSpec(
        "guitar_distortion",
        "guitar",
        "fluidr3-distortion-guitar",
        MidiRender(30, _chords([[40, 47], [40, 47], [43, 50], [45, 52]], 0.25, velocity=110)),
    ),
    # lamellophones and tongue drums
    ClipSpec("mbira", "mbira", "lomiri-array-mbira", _lomiri("ringtones/Array mbira.ogg")),
    ClipSpec("tongue_drum", "mbira", "lomiri-tongue-drum", _lomiri("ringtones/Tongue drum.ogg")),
    ClipSpec("kalimba", "mbira", "fluidr3-kalimba", MidiRender(108, _melody([72, 76, 79, 74, 72, 67], 0.17))),
    # organs and reeds
    ClipSpec("church_organ", "organ", "fluidr3-church-organ", MidiRender(19, _chords([[48, 55, 60, 64, 67]], 1.3))),
    ClipSpec("drawbar_organ", "organ", "fluidr3-drawbar-organ", MidiRender(16, _melody([60, 62, 64, 67, 64], 0.22))),
    ClipSpec("accordion", "organ", "fluidr3-accordion", MidiRender(21, _melody([64, 65, 67, 72, 71, 67], 0.18))),
    # bowed strings
    ClipSpec("violin", "strings", "fluidr3-violin", MidiRender(40, _melody([76, 74, 72, 71, 72], 0.24, legato=1.0))),
    ClipSpec("cello", "strings", "fluidr3-cello", MidiRender(42, _melody([36, 43, 48], 0.42, legato=1.0))),
    ClipSpec(
        "string_ensemble",
        "strings",
        "fluidr3-string-ensemble",
        MidiRender(48, _chords([[57, 60, 64, 69], [55, 59, 62, 67]], 0.6)),
    ),
    # brass
    ClipSpec("trumpet", "brass", "fluidr3-trumpet", MidiRender(56, _melody([67, 72, 76, 79, 76, 79], 0.18))),
    ClipSpec("trombone", "brass", "fluidr3-trombone", MidiRender(57, _melody([46, 50, 53, 58], 0.3))),
    ClipSpec("french_horn", "brass", "fluidr3-french-horn", MidiRender(60, _melody([55, 60, 64, 62], 0.3))),
    # woodwinds
    ClipSpec("flute", "woodwind", "fluidr3-flute", MidiRender(73, _melody([79, 81, 83, 86, 83, 81], 0.18))),
    ClipSpec("clarinet", "woodwind", "fluidr3-clarinet", MidiRender(71, _melody([58, 62, 65, 70, 65], 0.22))),
    ClipSpec("saxophone", "woodwind", "fluidr3-alto-sax", MidiRender(65, _melody([61, 64, 66, 68, 71, 68], 0.18))),
    # drums
    ClipSpec("drums_rock_beat", "drums", "fluidr3-standard-kit", MidiRender(0, DRUM_ROCK, percussion=True)),
    ClipSpec("snare_roll", "drums", "fluidr3-snare", MidiRender(0, DRUM_ROLL, percussion=True)),
    ClipSpec("congas", "drums", "fluidr3-congas", MidiRender(0, CONGAS, percussion=True)),
    # voices singing
    ClipSpec(
        "choir_aahs",
        "choir",
        "fluidr3-choir-aahs",
        MidiRender(52, _chords([[57, 60, 64], [55, 59, 62]], 0.6)),
    ),
    ClipSpec(
        "voice_oohs",
        "choir",
        "fluidr3-voice-oohs",
        MidiRender(53, _melody([64, 67, 69, 67], 0.3, legato=1.0)),
    ),
    # synthesiser music
    ClipSpec("entropy", "synth_music", "lomiri-entropy", _lomiri("ringtones/Entropy.ogg", DUARTE, "CC-BY-4.0")),
    ClipSpec(
        "sakenointi",
        "synth_music",
        "tmetso-sakenointi",
        _lomiri("ringtones/sakenointi.ogg", '2018, "TMetso"', "CC-BY-4.0"),
    ),
    ClipSpec(
        "synth_lead",
        "synth_music",
        "fluidr3-saw-lead",
        MidiRender(81, _melody([57, 60, 64, 69, 64, 72], 0.18)),
    ),
    # birds
    ClipSpec("bird_tweet", "birds", "fluidr3-bird-tweet", MidiRender(123, _held(72))),
    ClipSpec("birdsong_warbler", "birds", "warbler", Procedural("birdsong_warbler", 105)),
    ClipSpec("birdsong_chirp", "birds", "sparrow", Procedural("birdsong_chirp", 106)),
    # water
    ClipSpec("seashore", "water", "fluidr3-seashore", MidiRender(122, _held(60))),
    ClipSpec("running_tap", "water", "kitchen-tap", Procedural("running_tap", 107)),
    ClipSpec("rain", "water", "rain-on-window", Procedural("rain", 108)),
    # engines
    ClipSpec("helicopter", "engine", "fluidr3-helicopter", MidiRender(125, _held(60))),
    ClipSpec("car_engine_idle", "engine", "four-cylinder-idle", Procedural("car_engine_idle", 110)),
    # applause
    ClipSpec("applause", "applause", "fluidr3-applause", MidiRender(126, _held(60))),
    ClipSpec("hand_clapping", "applause", "single-person-clapping", Procedural("hand_clapping", 112)),
    # sirens
    ClipSpec("siren_wail", "siren", "siren-wail", Procedural("siren_wail", 113)),
    ClipSpec("siren_yelp", "siren", "siren-yelp", Procedural("siren_yelp", 114)),
    ClipSpec("siren_hilo", "siren", "siren-hi-lo", Procedural("siren_hilo", 115)),
    # electronic beepers
    ClipSpec("smoke_detector", "beeper", "smoke-detector", Procedural("smoke_detector", 116)),
    ClipSpec("microwave_beep", "beeper", "microwave-oven", Procedural("microwave_beep", 117)),
    ClipSpec("reversing_beep", "beeper", "reversing-alarm", Procedural("reversing_beep", 118)),
    # household appliances
    ClipSpec("fan", "appliance", "electric-fan", Procedural("fan", 119)),
    ClipSpec("vacuum_cleaner", "appliance", "vacuum-cleaner", Procedural("vacuum_cleaner", 120)),
    ClipSpec("hair_dryer", "appliance", "hair-dryer", Procedural("hair_dryer", 121)),
    # knocking, ticking, footsteps
    ClipSpec("door_knock", "knock", "wooden-door", Procedural("door_knock", 122)),
    ClipSpec("table_knock", "knock", "table-top", Procedural("table_knock", 123)),
    ClipSpec("clock_ticking", "clock", "mechanical-clock", Procedural("clock_ticking", 124)),
    ClipSpec("metronome", "clock", "fluidr3-wood-block", MidiRender(0, METRONOME, percussion=True)),
    ClipSpec("footsteps_hard_floor", "footsteps", "shoes-on-wood", Procedural("footsteps_hard_floor", 125)),
    ClipSpec("footsteps_carpet", "footsteps", "steps-on-carpet", Procedural("footsteps_carpet", 126)),
)
