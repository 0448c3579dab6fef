"""`fluxid caption`: the builtin tiny captioner end to end in both layouts, existing captions and their backup, the
identity-trait post-processor on real English, bad input (empty answers, wrong model folders, unreadable images),
offline loading, and the dashboard's review before saving."""
import contextlib, io, os, socket, shutil
from pathlib import Path
import pytest

TRIGGER = 'ohwx'


def demo_copy(folder: Path, layout: str = 'split', uncaptioned=()) -> Path:
    "A fresh copy of the demo subject (never the cached one), with the captions of `uncaptioned` removed (all: 'all')."
    from fluxid_nb.demo import demo_subject
    root = demo_subject(folder, layout=layout)
    caps = root/'captions' if layout == 'split' else root
    for f in sorted(caps.glob('*.txt')):
        if uncaptioned == 'all' or f.stem in uncaptioned: f.unlink()
    return root


def caption_files(root: Path) -> dict:
    caps = root/'captions' if (root/'images').is_dir() else root
    return {f.stem: f.read_bytes() for f in sorted(caps.glob('*.txt'))}


def caption_problems(root: Path) -> list:
    "The analyzer's caption, trigger and trait findings above info level for a folder."
    from fluxid_nb.analyze import analyze
    a = analyze(root, profile='demo', trigger=TRIGGER, faces=False)
    return [f for f in a.findings if f.severity != 'info' and f.code.startswith(('caption', 'trigger', 'trait', 'dataset'))]


@pytest.fixture(scope='module')
def captioner():
    from fluxid_nb.caption import load_captioner
    return load_captioner('builtin:tiny')


@pytest.mark.parametrize('layout', ['split', 'flat'])
def test_tiny_captions_a_dataset_in_its_own_layout(tmp_path, layout, captioner):
    from fluxid_nb.caption import caption_dataset, strip_traits, MAX_CAPTION_TOKENS
    from fluxid_nb.prompts import clip_tokens, permanent_traits
    root = demo_copy(tmp_path/'subject', layout, uncaptioned='all')
    run = caption_dataset(root, captioner, progress=False)
    written = caption_files(root)
    assert sorted(written) == [f'subject_{i:02d}' for i in range(18)] and len(run.written) == 18
    if layout == 'flat': assert not (root/'captions').exists() and all(p.parent == root for p in run.written)
    else: assert all(p.parent == root/'captions' for p in run.written)
    for name, raw in written.items():
        text = raw.decode('utf-8')
        assert text.endswith('\n') and text.count('\n') == 1, name
        cap = text.strip()
        assert cap.startswith('ohwx person, ') and len(cap) > len('ohwx person, x'), cap
        assert len(clip_tokens(cap)) + 2 <= MAX_CAPTION_TOKENS, cap
        assert strip_traits(cap)[1] == [] and permanent_traits(cap) == {}, cap
    raws = [p.raw for p in run.proposals]
    assert all(raws) and len(set(raws)) == 18            # the model's own (gibberish) text, one per image
    assert caption_problems(root) == []                    # analyzer-clean: trigger, length, variety, traits
    assert not [p for p in root.rglob('.*.part')] and 0 < run.s_per_image < 5


def test_existing_captions_are_never_changed_without_overwrite(tmp_path, captioner):
    from fluxid_nb.caption import caption_dataset, caption_main, propose_captions, write_captions
    root = demo_copy(tmp_path/'subject', uncaptioned=('subject_03', 'subject_11'))
    (root/'captions'/'subject_05.txt').write_text('   \n')  # empty: counts as missing
    before = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in (root/'captions').glob('*.txt') if f.stem != 'subject_05'}
    run = caption_dataset(root, captioner, progress=False)
    assert sorted(p.stem for p in run.written) == ['subject_03', 'subject_05', 'subject_11'] and len(run.kept) == 15
    assert {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in (root/'captions').glob('*.txt') if f.name in before} == before
    assert run.backup is None and not list(root.glob('captions_backup_*'))
    snap = caption_files(root)
    with contextlib.redirect_stdout(io.StringIO()) as out: assert caption_main(str(root), progress=False) == 0
    assert caption_files(root) == snap and 'kept 18 existing caption(s)' in out.getvalue()
    # a caption that appears between proposing and writing is not overwritten either
    (root/'captions'/'subject_03.txt').unlink()
    late = propose_captions(root, captioner, progress=False)
    (root/'captions'/'subject_03.txt').write_text('ohwx, written by hand\n')
    with pytest.raises(FileExistsError, match='--overwrite'): write_captions(late)
    assert (root/'captions'/'subject_03.txt').read_text() == 'ohwx, written by hand\n'


def test_overwrite_keeps_the_old_captions_as_a_backup(tmp_path, captioner):
    from fluxid_nb.caption import caption_dataset
    root = demo_copy(tmp_path/'subject', 'flat', uncaptioned=('subject_07',))
    old = caption_files(root)
    run = caption_dataset(root, captioner, overwrite=True, progress=False)
    assert len(run.written) == 18 and run.backup is not None and run.backup.parent == root
    assert {f.stem: f.read_bytes() for f in run.backup.iterdir()} == old     # the 17 replaced, byte for byte
    new = caption_files(root)
    assert all(new[n] != old[n] and new[n].startswith(b'ohwx person, ') for n in old)
    again = caption_dataset(root, captioner, overwrite=True, progress=False)
    assert again.backup != run.backup and {f.stem: f.read_bytes() for f in again.backup.iterdir()} == new
    assert not [p for p in root.rglob('.*')]                                # no half-written file or folder left
    from fluxid_nb.data import load_dataset
    assert len(load_dataset(root).items) == 18                              # the backup folders are not dataset files


@pytest.mark.parametrize('raw, expected', [
    ("A young woman with piercing blue eyes and long wavy auburn hair, wearing a red jacket, standing in a park.",
     "ohwx person, a woman, wearing a red jacket, standing in a park"),
    ("The image shows a middle-aged man with a salt-and-pepper beard and green eyes, sitting at a cafe table by the window.",
     "ohwx person, a man, sitting at a cafe table by the window"),
    ("This photo depicts an Asian woman in her twenties with fair skin and freckles, smiling at the camera under soft daylight.",
     "ohwx person, a woman, smiling at the camera under soft daylight"),
    ("Close-up portrait of a blonde woman with a round face and a small mole, wearing a black turtleneck against a blue background.",
     "ohwx person, close-up portrait of a woman, wearing a black turtleneck against a blue background"),
    ("A 30-year-old Black man with dark brown skin and a goatee wearing a grey hoodie, side profile, dramatic rim lighting",
     "ohwx person, a man wearing a grey hoodie, side profile, dramatic rim lighting"),
    ("a woman with green eyes and a yellow scarf walking in the rain, an old building behind her",
     "ohwx person, a woman with a yellow scarf walking in the rain, an old building behind her"),
    ("A smiling man with short dark hair and a neatly trimmed beard wears a navy blue suit, standing outdoors in a park.",
     "ohwx person, a smiling man wears a navy blue suit, standing outdoors in a park"),
    ("Photo of a bald man with glasses and a scar on his cheek, in a dimly lit bar.",
     "ohwx person, photo of a bald man with glasses, in a dimly lit bar"),
    ("**Description:** A woman (late 20s) with olive skin, dark-brown eyes & shoulder-length black hair; wearing a red scarf.",
     "ohwx person, a woman, wearing a red scarf"),
])
def test_fixed_traits_are_dropped_from_real_captions(raw, expected):
    from fluxid_nb.caption import caption_text, strip_traits
    from fluxid_nb.prompts import permanent_traits
    out = caption_text(raw, TRIGGER)
    assert out == expected
    assert permanent_traits(out) == {} and strip_traits(out)[1] == []


def test_what_varies_is_kept_and_the_trait_list_is_configurable(tmp_path):
    from fluxid_nb.caption import IDENTITY_TRAITS, caption_text, strip_traits, trait_rules
    varied = "black leather jacket, dark room, blue background, light from the left, an old stone bridge, young trees"
    assert strip_traits(varied) == (varied, [])
    assert {'eye colour', 'hair colour', 'skin tone', 'ethnicity', 'age', 'facial hair', 'skin marks', 'face shape'} <= set(IDENTITY_TRAITS)
    (tmp_path/'traits.txt').write_text("# ours\n-age\n(?:an?\\s+)?(?:tattoos?|piercings?)\n", encoding='utf-8')
    rules = trait_rules(tmp_path/'traits.txt')
    assert caption_text("A young man with a tattoo and a blue cap", TRIGGER, rules=rules) == "ohwx person, a young man with a blue cap"
    assert caption_text("A young man with a tattoo and a blue cap", TRIGGER) == "ohwx person, a man with a tattoo and a blue cap"
    (tmp_path/'bad.txt').write_text("([unclosed\n")
    with pytest.raises(ValueError, match='not a regular expression'): trait_rules(tmp_path/'bad.txt')


def test_empty_model_output_becomes_trigger_and_class_word(tmp_path, captioner, monkeypatch):
    from fluxid_nb.caption import caption_dataset, caption_text
    assert caption_text('', TRIGGER, 'person') == 'ohwx, person'
    assert caption_text('   <|im_end|> ... ', 'sks', 'dog') == 'sks, dog'
    assert caption_text('Blue eyes, freckles.', TRIGGER, 'woman') == 'ohwx, woman'  # nothing left once the traits go
    root = demo_copy(tmp_path/'subject', uncaptioned=('subject_00', 'subject_01'))
    monkeypatch.setattr(captioner.model, 'generate', lambda input_ids, **kw: input_ids)  # answers nothing at all
    run = caption_dataset(root, captioner, progress=False)
    assert [p.raw for p in run.proposals] == ['', ''] and len(run.written) == 2
    assert (root/'captions'/'subject_00.txt').read_text(encoding='utf-8') == 'ohwx, person\n'


def test_a_wrong_model_path_says_what_folder_is_expected(tmp_path, capsys):
    from fluxid_nb.caption import CaptionModelError, caption_main, check_caption_model, tiny_captioner
    root = demo_copy(tmp_path/'subject', uncaptioned=('subject_02',))
    snap = caption_files(root)
    assert caption_main(str(root), model=str(tmp_path/'no-such-model'), progress=False) == 2
    err = capsys.readouterr().err
    assert 'no-such-model does not exist' in err and 'config.json' in err and 'processor_config.json' in err
    assert caption_files(root) == snap                                     # nothing written
    (tmp_path/'weights_only').mkdir(); (tmp_path/'weights_only'/'model.safetensors').write_bytes(b'x')
    with pytest.raises(CaptionModelError, match=r'missing config\.json; processor_config\.json or preprocessor_config\.json'):
        check_caption_model(tmp_path/'weights_only')
    other = shutil.copytree(tiny_captioner(), tmp_path/'bert')
    (other/'config.json').write_text('{"model_type": "bert"}')
    with pytest.raises(CaptionModelError, match="holds a 'bert' model, which is not an image-text-to-text model"):
        check_caption_model(other)
    with pytest.raises(CaptionModelError, match='is a file'): check_caption_model(other/'config.json')


def test_unreadable_images_are_skipped_with_the_analyzers_message(tmp_path, captioner, capsys):
    from fluxid_nb.caption import caption_dataset, caption_main
    from fluxid_nb.data import load_dataset
    root = demo_copy(tmp_path/'subject', 'flat', uncaptioned=('subject_00', 'subject_03', 'subject_04'))
    (root/'subject_03.jpg').write_bytes((root/'subject_03.jpg').read_bytes()[:2000])      # an interrupted copy
    (root/'subject_04.png').write_text('not a picture at all')                              # a text file named .png
    expected = {f.files[0]: f.message for f in load_dataset(root).findings if f.code in ('truncated', 'not-an-image')}
    assert sorted(expected) == ['subject_03.jpg', 'subject_04.png']
    run = caption_dataset(root, captioner, progress=False)
    assert {p.image.name: p.skipped for p in run.skipped} == expected
    assert [p.stem for p in run.written] == ['subject_00']
    assert not (root/'subject_03.txt').exists() and not (root/'subject_04.txt').exists()
    assert caption_main(str(root), progress=False) == 1                                     # still skipped, said again
    out = capsys.readouterr().out
    assert f"skipped subject_03: {expected['subject_03.jpg']}" in out and 'subject_04.png is a text file' in out


def test_the_model_loads_from_local_files_only(tmp_path, monkeypatch):
    import transformers
    from fluxid_nb import caption
    seen = []
    for cls in (transformers.AutoProcessor, transformers.AutoModelForImageTextToText):
        real = cls.from_pretrained.__func__
        def spy(c, *a, _real=real, _name=cls.__name__, **kw):
            seen.append((_name, kw.get('local_files_only'), kw.get('trust_remote_code')))
            return _real(c, *a, **kw)
        monkeypatch.setattr(cls, 'from_pretrained', classmethod(spy))
    attempts = []
    def refuse(*a, **k):
        attempts.append(a); raise OSError('network blocked by the test')
    for name in ('connect', 'connect_ex'): monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse); monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'): monkeypatch.delenv(k, raising=False)
    cap = caption.load_captioner('builtin:tiny')
    root = demo_copy(tmp_path/'subject', uncaptioned=('subject_09',))
    run = caption.caption_dataset(root, cap, progress=False)
    assert seen == [('AutoProcessor', True, False), ('AutoModelForImageTextToText', True, False)]
    assert attempts == [] and [p.stem for p in run.written] == ['subject_09']
    seen.clear()
    caption.load_captioner('builtin:tiny', trust_remote_code=True)
    assert seen == [('AutoProcessor', True, True), ('AutoModelForImageTextToText', True, True)]


def tiny_florence2(folder: Path) -> Path:
    "A random-weight Florence-2 folder (DaViT + BART shapes, word-level vocabulary): the task-token, encoder-decoder path."
    import torch
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (CLIPImageProcessorPil, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor,
                              GenerationConfig, PreTrainedTokenizerFast)
    from fluxid_nb.caption import _TINY_WORDS
    special = ['<pad>', '<unk>', '<s>', '</s>', '<image>']
    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(special + sorted(set(_TINY_WORDS)))}, unk_token='<unk>'))
    t.add_special_tokens([AddedToken(x, special=True, normalized=False) for x in special])
    t.normalizer = normalizers.Lowercase()
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token='<s>', eos_token='</s>', pad_token='<pad>', unk_token='<unk>',
                                  extra_special_tokens={'image_token': '<image>'})
    ids = {x: tok.convert_tokens_to_ids(x) for x in special}
    cfg = Florence2Config(
        vision_config=dict(depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1], patch_prenorm=[False, True],
                           embed_dim=[16, 32], num_heads=[2, 2], num_groups=[2, 2], window_size=4, projection_dim=32, drop_path_rate=0.0),
        text_config=dict(vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                         bos_token_id=ids['<s>'], eos_token_id=ids['</s>'], pad_token_id=ids['<pad>'], decoder_start_token_id=ids['</s>']),
        image_token_id=ids['<image>'])
    torch.manual_seed(0)
    m = Florence2ForConditionalGeneration(cfg)
    m.generation_config = GenerationConfig(decoder_start_token_id=ids['</s>'], bos_token_id=ids['<s>'], eos_token_id=ids['</s>'],
                                           pad_token_id=ids['<pad>'], max_new_tokens=20, no_repeat_ngram_size=2, repetition_penalty=5.0)
    with torch.no_grad(): m.get_input_embeddings().weight.mul_(0.01)   # as the tiny captioner: answers, not an instant end
    image = CLIPImageProcessorPil(size={'height': 64, 'width': 64}, do_center_crop=False)
    image.image_seq_length = 65                                   # (64 / 8)² patches + 1 pooled
    Florence2Processor(image_processor=image, tokenizer=tok).save_pretrained(folder)
    m.save_pretrained(folder)
    return folder


def test_florence2_folders_are_asked_with_their_task_token(tmp_path):
    from fluxid_nb.caption import FLORENCE_TASK, caption_dataset, load_captioner
    cap = load_captioner(str(tiny_florence2(tmp_path/'florence2')))
    assert cap.prompt == FLORENCE_TASK and cap.model.config.is_encoder_decoder
    assert type(cap.model).__name__ == 'Florence2ForConditionalGeneration' and cap.read_side == 256
    root = demo_copy(tmp_path/'subject', uncaptioned=('subject_00', 'subject_01'))
    run = caption_dataset(root, cap, progress=False)
    assert all(p.raw for p in run.proposals) and len(run.written) == 2
    assert [f.read_text(encoding='utf-8').startswith('ohwx person, ') for f in run.written] == [True, True]


def test_cli_entry_prints_captions_speed_and_the_analyzers_findings(tmp_path, capsys):
    from fluxid_nb.analyze import analyze, format_findings
    from fluxid_nb.caption import caption_main
    root = demo_copy(tmp_path/'subject', uncaptioned=('subject_12', 'subject_13'))
    rc = caption_main(str(root), trigger='zyx', class_word='woman', progress=False,
                      report=lambda folder, trig: format_findings(analyze(folder, profile='demo', trigger=trig, faces=False)))
    out = capsys.readouterr().out
    assert rc == 0 and 'subject_12: zyx woman, ' in out and 's per image' in out
    assert "wrote 2 caption(s) into" in out and 'kept 16 existing caption(s)' in out
    assert 'ERRORS: 18 images' in out and 'trigger-missing' in out   # the analyzer sees the other 16 lack 'zyx'
    assert caption_main('builtin:demo', progress=False) == 2 and 'read-only' in capsys.readouterr().err


def test_dashboard_reviews_before_saving(tmp_path):
    from fluxid_nb.config import resolve_config
    from fluxid_nb.dashboard import DatasetPanel
    root = demo_copy(tmp_path/'subject', uncaptioned=('subject_04', 'subject_05'))
    cfg = resolve_config('demo', env={}, out_dir=str(tmp_path/'out'), run_name='cap', data_dir=str(root))
    dp = DatasetPanel(cfg, faces=False)
    cr = dp.captioning
    assert not cr.missing_button.disabled and cr.save_button.disabled
    snap = caption_files(root)
    cr.missing_button.click()
    assert [p.name for p in cr.run.proposals] == ['subject_04', 'subject_05'] and caption_files(root) == snap
    cr.discard_button.click()                                              # discarded: nothing written
    assert cr.run is None and caption_files(root) == snap and 'nothing was written' in cr.status.value
    cr.missing_button.click()
    cr.rows[0][1].value = 'ohwx person, leaning on a railing, overcast'
    cr.save_button.click()
    assert (root/'captions'/'subject_04.txt').read_text() == 'ohwx person, leaning on a railing, overcast\n'
    assert (root/'captions'/'subject_05.txt').read_text().startswith('ohwx person, ')
    assert dp.analysis is not None and 'Analyzer verdict' in dp.verdict.value   # the analyzer ran on the result
    old = caption_files(root)
    cr.recaption_button.click()
    assert len(cr.run.proposals) == 18 and caption_files(root) == old
    for _, text, keep in cr.rows[2:]: keep.value = False                   # save only two
    cr.save_button.click()
    backup, = root.glob('captions_backup_*')
    assert sorted(f.stem for f in backup.iterdir()) == ['subject_00', 'subject_01']
    assert {f.stem: f.read_bytes() for f in backup.iterdir()} == {k: old[k] for k in ('subject_00', 'subject_01')}
    assert caption_files(root)['subject_02'] == old['subject_02'] and dp.errors.errors == []
    ro = DatasetPanel(resolve_config('demo', env={}, out_dir=str(tmp_path/'out'), run_name='ro'), faces=False)
    assert ro.read_only and ro.captioning.missing_button.disabled and ro.captioning.recaption_button.disabled
