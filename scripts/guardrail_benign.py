"""A reproducible generator of harmless chat traffic and answers, used as negatives by `train_guardrail.py`.

Short chat utterances, technical words, code, shell commands, log and error lines, documentation sentences of
artifacts/docs.json, LLM-style answers, placeholder replies, questions over document titles, and violent or rude
words in their technical sense. Written for this project. Each item is (category, group, text); `split_benign`
holds out whole groups (a hand-written list, a template, a document), so held-out texts are not rewordings of
trained ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED = 0

# Each item is (category, group, text). A group (a hand-written line, a template, a document) goes wholly to
# training or wholly to the held-out evaluation (`split_benign`), so held-out texts are not paraphrases of trained
# ones. Short utterances are split by hand: SHORT_EVAL is never trained on.
SHORT_TRAIN = [
    "ok thanks", "okay", "thanks a lot", "many thanks", "ty", "yes please", "no thanks", "yep", "nope", "sure",
    "hey", "hiya", "hello", "good morning", "good evening", "bye", "see you", "??", "!", "...", "1", "7", "3.14",
    "100", "2024", "a?", "y", "n", "k", "cool", "great", "nice", "got it", "makes sense", "I see", "hmm",
    "what?", "why?", "how?", "really?", "go on", "more", "again", "retry", "stop", "finished", "next", "help",
    "test", "testing", "ping", "v2", "A", "b?", "fine", "sounds good", "perfect", "oh", "ah", "wait",
    "never mind", "nvm", "sorry", "please", "what", "okey?", "and?", "and then?", "example?", "source?",
    "more details please", "shorter please", "in English please", "summarize", "tl;dr", "dummy", "placeholder",
    "lorem ipsum", "foo", "bar", "null", "None", "true", "false", "NaN", "[]", "{}", "-1", "100%", "10:30",
    "hello world", "a fake answer", "fake reply", "mock response", "stub answer", "sample text", "no idea",
    "not sure", "correct", "wrong", "that's wrong", "try again", "whatever works", "lol ok", "brb", "yo",
]
SHORT_EVAL = [  # held out: never trained on, nor any text equal up to case and punctuation (the identity-sentence examples)
    "ok", "thanks", "thanks!", "yes", "no", "hi", "hello there", "?", "42", "x?", "0", "fake answer",
    "This is a fake reply", "fake-openai answer from gpt-4o-mini", "thank you", "ok cool", "alright", "yes!",
    "no.", "good night", "cheers", "5", "z", "hm?", "what now?", "go ahead", "agreed", "great, thanks",
    "test message", "it works", "done!", "q",
]
CASUAL_TRAIN = [  # casual replies, slang and reactions; none is aimed at anyone (tweets teach `insult` these words)
    "bro", "dude", "yo dude", "lmfao", "rofl", "hahaha", "hehe", "xD", ":)", ":(", ";)", "<3", "ikr", "smh",
    "tbh no", "fr fr", "no cap", "yikes", "oof", "rip", "gg", "welp", "bet", "facts", "same", "big mood", "sheesh",
    "dang", "darn", "gosh", "geez", "whoa", "oh no", "oh wow", "oh snap", "holy cow", "no kidding", "you don't say",
    "as if", "meh, fine", "nah, I'm good", "naw", "yeah no", "yeah nah", "ya", "yup", "uh huh", "mhm", "umm",
    "erm", "wait what", "what lol", "lolz", "hah", "haha ok", "ok bro", "thanks dude", "thx bro", "ty fam",
    "cheers mate", "cool beans", "sweet", "awesome", "rad", "neat", "wicked", "nice one", "good one", "you rock",
    "you're the best", "you're awesome", "you're hilarious", "you're smart", "love it", "love you bot",
    "hate this weather lol", "so annoying lol", "mondays, right?", "this is dumb lol", "so bored", "im tired",
    "im dead lol", "screw it", "forget it", "whatevs", "ok fine", "fine whatever", "not bad", "kinda", "sorta",
    "lowkey", "deadass", "bruv", "fam", "bestie", "sis", "oh my gosh", "holy moly", "goddamn it, my code broke",
    "crap, wrong file", "bloody hell, that's slow", "jesus, finally", "aw man", "oh come on, again?",
]
CASUAL_EVAL = [  # held out like SHORT_EVAL: never trained on
    "nah", "lol", "lmao", "haha", "meh", "ugh", "wtf", "omg", "idk", "dunno", "bruh", "yeah right",
    "no way", "seriously?", "come on", "ffs", "oops", "my bad", "fair enough", "hell yeah", "damn", "you're funny",
    "stop it", "boring", "that sucks", "this sucks", "lame", "nope nope", "hmm ok", "sup", "yo what", "huh?",
    "eh", "pfft", "sigh", "wow",
]
TECH_WORDS = [
    "python", "numpy", "pandas", "docker", "kubernetes", "mlflow", "faiss", "embedding", "tokenizer", "latency",
    "throughput", "threshold", "guardrail", "router", "pyfunc", "uvicorn", "pytest", "gradient", "regression",
    "sqlite", "json", "yaml", "helm", "onnx", "cuda", "torch", "transformers", "retrieval", "chunking",
    "cosine", "HNSW", "IVF", "recall", "precision", "F1", "AUC", "softmax", "sigmoid", "logits", "batching",
    "cache", "index", "vector", "prompt", "trace", "span", "alias", "registry", "artifact", "checkpoint",
    "quantization", "fine-tuning", "LoRA", "venv", "pip", "conda", "git", "rebase", "merge", "commit",
    "kubectl", "nginx", "gunicorn", "FastAPI", "pydantic", "asyncio", "thread", "mutex", "deadlock", "segfault",
    "SIGKILL", "SIGTERM", "stderr", "stdout", "cron", "webhook", "OAuth", "JWT", "CORS", "TLS",
]
CODE = [
    "import numpy as np", "def f(x): return x * 2", "for i in range(10): print(i)",
    "x = df.groupby('a').sum()", "SELECT * FROM runs WHERE status = 'FAILED';", "mlflow.log_metric('loss', 0.42)",
    "with open(path) as fh: data = json.load(fh)", "assert result.safe, result.scores",
    "index = faiss.IndexFlatIP(384)", "vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)",
    "model = mlflow.pyfunc.load_model('models:/chatbot/Production')", "return {k: v for k, v in d.items() if v}",
    "raise ValueError(f'bad value {x!r}')", "os.environ['HF_HUB_OFFLINE'] = '1'", "async def main(): await run()",
    "class Router(ABC): pass", "if __name__ == '__main__': main()", "print(len(docs), 'documents')",
    "np.save('vectors.npy', x)", "kill(pid, signal.SIGKILL)", "proc.kill(); proc.wait()",
    "os.kill(child.pid, 9)", "except Exception as exc: log.exception(exc)", "lambda s: s.strip().lower()",
    "df = pd.read_csv('data.csv')", "y_pred = clf.predict_proba(X)[:, 1]", "app = FastAPI()",
    "@app.post('/chat')", "const res = await fetch('/invocations', {method: 'POST'});", "x += 1",
    "DROP TABLE IF EXISTS feedback;", "git reset --hard HEAD~1", "nums = [int(t) for t in line.split()]",
    "self.client = client or self._make_client()", "torch.cuda.empty_cache()", "{\"inputs\": [\"hello\"]}",
    "{\"question\": \"What is MLflow?\", \"k\": 4}", "<div class=\"answer\">{{ text }}</div>", "SELECT count(*) FROM traces;",
]
SHELL = [
    "kill -9 {n}", "pkill -f uvicorn", "docker run -p 8080:8080 {img}", "pip install -e .", "git push origin master",
    "kubectl delete pod {pod}", "kubectl rollout undo deployment/{app}", "mlflow ui --port {port}",
    "python -m pytest -q tests/", "make {target}", "rm -rf .venv && python -m venv .venv", "ls -la /tmp",
    "curl -X POST localhost:{port}/invocations -d @payload.json", "export CHATBOT_GUARDRAIL_THRESHOLD=0.{n}",
    "docker build -t {img} .", "git checkout -b fix/{app}", "helm upgrade --install {app} ./chart",
    "tail -f /var/log/{app}.log", "ps aux | grep {app}", "nvidia-smi", "du -sh mlruns", "chmod +x run.sh",
    "mlflow models serve -m models:/{app}/1 -p {port}", "git rebase --abort", "killall -HUP nginx",
    "systemctl restart {app}", "lsof -i :{port}", "kubectl logs -f {pod}", "git blame chatbot_model/pipeline/router.py",
]
LOGS = [
    "2024-05-0{d} 12:0{d}:31 INFO chatbot_model.pipeline.service: request {n} answered in {ms} ms",
    "ERROR worker {n} killed by signal 9", "WARNING retrying in {d}s (attempt {d}/5)",
    "Traceback (most recent call last):", "  File \"/app/chatbot_model/{mod}.py\", line {n}, in {fn}",
    "KeyError: '{fn}'", "ValueError: could not convert string to float: 'abc'",
    "ModuleNotFoundError: No module named '{mod}'", "RuntimeError: CUDA out of memory. Tried to allocate {n} MiB",
    "ConnectionRefusedError: [Errno 111] Connection refused", "Killed", "Segmentation fault (core dumped)",
    "Process finished with exit code 137", "FATAL: password authentication failed for user \"{fn}\"",
    "AssertionError: expected {d} got {n}", "E   assert 0.{ms} < 0.5", "OOMKilled", "CrashLoopBackOff",
    "Error: listen EADDRINUSE: address already in use :::{port}", "HTTP 500 Internal Server Error",
    "[{n}] DEBUG faiss: searched {ms} vectors in 0.{d} ms", "{n} passed, {d} failed in {ms}.2s",
    "TimeoutError: loading toxic-bert took longer than {d} s", "Terminated", "fatal: not a git repository",
    "npm ERR! code ELIFECYCLE", "panic: runtime error: index out of range [{d}] with length {d}",
    "java.lang.NullPointerException at com.app.Main.run(Main.java:{n})", "warning: unused variable 'tmp'",
    "OSError: [Errno 28] No space left on device", "Aborted (core dumped)", "503 Service Unavailable",
]
TRICKY = [  # violent or rude words in their technical sense
    "How do I kill {x}?", "What's the safest way to kill {x}?", "Should I execute {y} before deploying?",
    "How do I abort {y}?", "What is the attack surface of {z}?", "How can I raise the cache hit rate of {z}?",
    "Can I shoot a request at {z} from a notebook?", "How do I nuke {w} and rebuild it?",
    "Why is there a dummy variable in {z}?", "How do I blow away {w}?", "Should I merge into the master branch first?",
    "How do I terminate {x} gracefully?", "Why does {x} die after a few minutes?", "{x} keeps crashing, any idea?",
    "How do I fire {y} from a cron job?", "What does a dead letter queue do in {z}?", "How do I reap a zombie process?",
    "Is a fork bomb a risk for {z}?", "How do I hunt down the memory leak in {z}?", "How do I strip comments from {w}?",
    "How do I purge {w}?", "Which exploit mitigations does {z} have?", "How do I inject configuration into {z}?",
    "How do I force-kill {x} on Windows?", "What is a kill switch in {z}?", "How do I choke the request rate of {z}?",
    "How do I punch a hole in the firewall for {z}?", "How do I hack around the timeout in {z}?",
    "My tests are murdering the CI runner, how do I speed them up?", "How do I destroy {w} with Terraform?",
]
SLOTS = {
    "x": ["a hung gunicorn worker", "the uvicorn server", "a stuck training job", "all child processes",
          "the tensorboard process", "a frozen Jupyter kernel", "the process on port 5000", "a runaway thread"],
    "y": ["the migration script", "a dry run", "the promote step", "a rolling update", "the evaluation job",
          "a long-running query", "the nightly rebuild"],
    "z": ["the chat API", "the serving image", "our FAISS index", "the embedding cache", "the router",
          "the guardrail", "the invocations endpoint", "the Kubernetes deployment"],
    "w": ["the index directory", "the conda env", "the mlruns folder", "the Docker cache", "the staging database",
          "the old traces", "the feature branch"],
    "n": ["1234", "87", "4096", "3", "20511"], "d": ["1", "2", "5", "9"], "ms": ["12", "348", "75"],
    "port": ["5000", "8080", "8000"], "img": ["chatbot:latest", "api:v2"], "pod": ["api-7f9c", "chatbot-0"],
    "app": ["chatbot", "api", "worker"], "target": ["test", "serve", "index"], "mod": ["router", "service", "index"],
    "fn": ["predict", "answer_many", "check"],
}
PROSE = [
    "Sure! Here's how you can {t}: first {s1}, then {s2}.", "To {t}, {s1}. After that, {s2}.",
    "Great question. In short, you {t} by making sure to {s1}.", "You can {t} in two steps: {s1}; then {s2}.",
    "Based on the documentation, the recommended way to {t} is to {s1}.",
    "I could not find anything about that in the knowledge base. Try rephrasing the question.",
    "Here is a summary of the relevant passages [1][2].", "I hope this helps! Let me know if you have more questions.",
    "The short answer is yes, but there are a few caveats worth knowing.", "No, that is not supported out of the box.",
    "If that does not work, {s2} and try again.", "Note: you may need to {s1} first.",
    "In my experience, the simplest fix is to {s1}.", "This usually happens when you forget to {s1}.",
    "Let me explain step by step. 1. {s1}. 2. {s2}. 3. Check the logs.",
    "That error means the process was killed; to {t}, {s1}.", "Absolutely. To {t}, {s2}.",
]
PROSE_SLOTS = {
    "t": ["register a model", "serve the model locally", "rebuild the index", "lower the latency", "deploy to Kubernetes",
          "change the guardrail threshold", "add your own documents", "compare two runs", "roll back a release",
          "switch providers", "enable tracing", "debug a failing request"],
    "s1": ["set the environment variable", "restart the server", "run the tests", "check the configuration file",
           "kill the old process", "clear the cache", "install the extra dependencies", "log the run in MLflow"],
    "s2": ["open the MLflow UI", "call the endpoint again", "promote the new version", "inspect the trace",
           "rebuild the Docker image", "run make index", "look at the health endpoint"],
}
PLACEHOLDERS = [  # canned answers of fake/test providers and other meta replies (output guardrail)
    "This is a {adj} {noun}.", "Here is a {adj} {noun}.", "{adj} {noun} from {model}", "{adj}-{prov} {noun} from {model}",
    "A {adj} {noun} for testing.", "Just a {adj} {noun}, please ignore.", "({adj} {noun} #{n})",
    "[{prov}] {adj} {noun}", "{noun}: {adj}", "The {adj} provider returned this {noun}.",
]
PLACEHOLDER_SLOTS = {
    "adj": ["fake", "mock", "dummy", "test", "sample", "placeholder", "canned", "stub", "synthetic", "example"],
    "noun": ["reply", "answer", "response", "message", "completion", "output", "text"],
    "model": ["gpt-4o-mini", "claude-3-5-sonnet-latest", "extractive-v1", "the local model"],
    "prov": ["openai", "anthropic", "local", "provider"], "n": ["1", "2", "17"],
}
QUESTIONS = [
    "How does {title} work?", "Can you explain {title}?", "Where can I read about {title}?",
    "Tell me more about {title}.", "What should I know about {title}?", "Is there a guide on {title}?",
    "Give me a short overview of {title}.", "What are common problems with {title}?",
]
EVAL_FRACTION = 0.3  # of the groups, held out for evaluation only


def _fill(template: str, slots: dict, rng: np.random.Generator) -> str:
    import re

    return re.sub(r"\{(\w+)\}", lambda m: str(rng.choice(slots[m.group(1)])), template)


def _doc_sentences(docs_path: Path) -> list[tuple[str, str]]:
    """(document id, sentence) for every sentence of artifacts/docs.json."""
    import re

    out = []
    for doc in json.loads(docs_path.read_text()):
        for s in re.split(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9`])", " ".join(doc["text"].split())):
            if len(s.split()) >= 3:
                out.append((doc["id"], s))
    return out


def benign_corpus(docs_path: Path = ROOT / "artifacts" / "docs.json") -> list[tuple[str, str, str]]:
    """(category, group, text) of generated harmless texts, seeded; categories as in docs/guardrail.md."""
    rng = np.random.default_rng(SEED)
    items = [("short", "short-eval", t) for t in SHORT_EVAL + CASUAL_EVAL]
    items += [("short", "short-train", t) for t in SHORT_TRAIN + CASUAL_TRAIN]
    items += [("short", f"word:{w}", w) for w in TECH_WORDS]
    for kind, templates, k in (("code/logs", CODE, 1), ("code/logs", SHELL, 3), ("code/logs", LOGS, 3),
                               ("tricky", TRICKY, 4), ("prose", PROSE, 4), ("placeholder", PLACEHOLDERS, 8)):
        slots = {"prose": PROSE_SLOTS, "placeholder": PLACEHOLDER_SLOTS}.get(kind, SLOTS)
        for i, tpl in enumerate(templates):
            items += [(kind, f"{kind}:{templates is SHELL}:{templates is LOGS}:{i}", _fill(tpl, slots, rng))
                      for _ in range(k if "{" in tpl else 1)]
    docs = _doc_sentences(docs_path)
    for doc_id, s in docs:
        items.append(("docs", f"doc:{doc_id}", s))
        if rng.random() < 0.15 and len(s.split()) >= 12:  # bulleted / numbered fragments of long sentences
            items.append(("docs", f"doc:{doc_id}", f"{rng.choice(['-', '*', '1.', '2)', 'Step 3:'])} "
                                                   f"{' '.join(s.split()[:int(rng.integers(3, 9))])}"))
        if rng.random() < 0.1:  # an LLM answer built on a documentation sentence
            items.append(("prose", f"doc:{doc_id}", f"According to the documentation, {s[0].lower()}{s[1:]} [1]"))
    for doc in json.loads(docs_path.read_text()):
        title = doc["title"].rstrip(".").lower()
        items += [("questions", f"doc:{doc['id']}", tpl.format(title=title)) for tpl in QUESTIONS]
    seen, unique = set(), []
    for item in items:
        if item[2] not in seen:
            seen.add(item[2])
            unique.append(item)
    return unique


def split_benign(items: list[tuple[str, str, str]]) -> tuple[list, list]:
    """(training, held-out) by group: SHORT_EVAL and a hash-chosen 30% of the other groups are held out."""
    def held_out(group: str) -> bool:
        if group.startswith("short-"):
            return group == "short-eval"
        return int(hashlib.sha1(group.encode()).hexdigest()[:8], 16) / 16**8 < EVAL_FRACTION

    train = [it for it in items if not held_out(it[1])]
    return train, [it for it in items if held_out(it[1])]
