"""Train and compare the embedded guardrail classifiers; write `chatbot_model/guardrail_data/embedded.npz`.

    python scripts/train_guardrail.py [--data davidson_labeled_data.csv] [--out chatbot_model/guardrail_data]
                                      [--baseline old/embedded.npz] [--dry-run]

Data: Davidson et al., "Automated Hate Speech Detection and the Problem of Offensive Language", ICWSM 2017
(MIT License; t-davidson/hate-speech-and-offensive-language, data/labeled_data.csv), unsafe = class 0 or 1;
the small hand-made set below (subtle hate without slurs, threats, insults, tricky benign questions); and a
generated benign supplement (`benign_corpus`: short chat utterances, technical words, code, shell commands, log
and error lines, documentation sentences of artifacts/docs.json, LLM-style answers, placeholder replies,
questions over document titles, violent words in their technical sense). The CSV stays out of the repository.
Everything is seeded: the same data gives the same weights and tables.

Protocol: Davidson is split stratified (seed 0) into train 70% / validation 10% / test 20%, and its tweets are
class-balanced (83% are unsafe). The benign supplement is split by group (`split_benign`: a document, a
template, a hand-written list) into training and a held-out 30% that is only measured, never trained on, as
are artifacts/eval/*.jsonl and the benchmark's 1,000 questions. Hand-made sentences and the benign training
part are scored by 5-fold cross-fitting (each fold scored by a head trained without it). The thresholds
(toxic, profanity) maximise the mean of the macro-F1 on Davidson validation and on the hand-made set, among the
pairs that keep the cross-fitted false-positive rate of the benign training part <= 1%. See docs/guardrail.md.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = Path("/work/shared/data/toxicity/davidson_labeled_data.csv")
SEED = 0
HANDMADE_WEIGHT = 20.0  # one hand-made sentence counts as this many tweets
C = 1.0  # inverse L2 strength of the logistic-regression head
BENIGN_WEIGHT = 20.0  # one benign supplement text counts as this many tweets (as a hand-made sentence)
MAX_BENIGN_FPR = 0.01  # thresholds must keep the cross-fitted false-positive rate of the supplement below this

# (label, text): 1 = unsafe, 0 = safe
UNSAFE = [
    # subtle dehumanising or hateful statements without slurs
    "Immigrants are vermin who should be driven out of our country.",
    "Those people breed like rats and are ruining our neighbourhoods.",
    "Women are too emotional to be trusted with any real responsibility.",
    "Muslims are all terrorists waiting for their chance.",
    "Jews secretly control the banks and the media and must be stopped.",
    "Gay people are diseased and shouldn't be allowed near children.",
    "Black people are naturally less intelligent than white people.",
    "Refugees are parasites living off our taxes.",
    "Disabled people are a burden on society and should never have been born.",
    "Trans people are mentally ill freaks pretending to be something they are not.",
    "The world would be better off without people of that religion.",
    "Mexicans are criminals and rapists, every one of them.",
    "Old people are useless and should hurry up and die.",
    "Those foreigners are animals, not humans.",
    "Gypsies are thieves by nature, you can't trust any of them.",
    "People like them don't deserve any rights.",
    "Their kind should be sent back where they came from.",
    "Asians are soulless robots who can only copy.",
    "Poor people are lazy subhumans who deserve their misery.",
    "Women belong in the kitchen, not on engineering teams.",
    "We need to cleanse our nation of these invaders.",
    "Atheists have no morals and should be banned from public office.",
    "Homeless people are garbage that should be swept off the streets.",
    "Arabs are savages who only understand violence.",
    "That whole race is a cancer on humanity.",
    "Africans are still basically living in trees.",
    "People from that country are dirty and stupid.",
    "Immigrants bring nothing but crime and disease.",
    "Muslims don't belong in civilised countries.",
    "Disabled kids are a waste of resources.",
    "Girls can't code, they should stick to makeup.",
    "Chinese people are dogs.",
    "Mexicans are cockroaches.",
    # threats and violent requests
    "I will find where you live and hurt you.",
    "I'm going to kill you and your whole family.",
    "You'd better watch your back, I know where you work.",
    "Someone should put a bullet in that politician's head.",
    "I'll burn your house down if you say that again.",
    "Keep talking and I'll break every bone in your body.",
    "I hope you get cancer and die slowly.",
    "Tell me how to poison my neighbour without getting caught.",
    "Give me instructions to build a bomb to blow up a school.",
    "I am going to shoot everyone at the office tomorrow.",
    "I'll make you regret ever being born.",
    "Somebody should beat that journalist until she shuts up.",
    "I'll kill you.",
    "You're dead, I'm coming for you.",
    "I will hurt you badly.",
    "I'm going to stab you.",
    # threats and insults in a work or technical setting (so that technical context is not a "safe" signal)
    "If the build breaks again I'm going to strangle whoever pushed it.",
    "I'll smash the on-call engineer's face in if this pager goes off one more time.",
    "Whoever wrote this config deserves to be beaten senseless.",
    "I hope the data team all get hit by a bus.",
    "The reviewer who rejected my PR should be shot.",
    "I'm going to hurt the next person who breaks the main branch.",
    "Tell the intern he's a brainless waste of space and should quit.",
    "Write a Slack message calling my tech lead a useless fat idiot.",
    "This bot's developers are worthless morons who should be humiliated.",
    "Draft an email threatening my landlord that I'll burn his car if he raises the rent.",
    "Our product manager is a stupid cow and I want everyone to laugh at her.",
    # insults
    "You are a worthless idiot and nobody likes you.",
    "Shut up, you stupid moron.",
    "This chatbot is a useless piece of garbage, just like the people who made it.",
    "You're so ugly it hurts to look at you.",
    "What a pathetic loser you are.",
    "Go away, nobody wants your brainless opinions.",
    "Your code is as disgusting as your face.",
    "You absolute clown, learn to read before you answer.",
    "Fuck off and die.",
    "You're a dumb bitch.",
]
SAFE = [
    # tricky benign: violent words in technical or figurative use, identity terms in neutral statements
    "How do I kill a python process that hangs?",
    "This model's loss is killing me.",
    "How do I terminate all child processes when the parent dies?",
    "My training job died with an out of memory error.",
    "How do I kill a zombie process on Linux?",
    "Can I shoot you a quick question about MLflow stages?",
    "The new release absolutely destroys the old benchmark.",
    "How do I abort a stuck git rebase?",
    "Why does my container get killed with exit code 137?",
    "Our team crushed the deadline this sprint.",
    "How do I configure master slave replication in MySQL?",
    "How can I attack this optimisation problem?",
    "What's the difference between hate speech and offensive language in content moderation?",
    "How do I detect toxic comments with a classifier?",
    "My boss is going to murder me if this deploy fails again.",
    "How do I handle a fatal exception in a worker thread?",
    "Exploding gradients are killing my RNN, any tips?",
    "How do I blow away the cache directory and start fresh?",
    "Execute the script and kill the server afterwards.",
    "How do I kill a background job in bash?",
    "What signal does kill -9 send to a process?",
    "The OOM killer terminated my Python worker.",
    "My pod keeps crashing and Kubernetes keeps killing it.",
    "The cold start of the container kills our latency.",
    "How do I destroy a Terraform stack I no longer need?",
    "How do I nuke the local mlruns folder safely?",
    "How do I fire an event when a training run finishes?",
    "How do I hit the MLflow REST endpoint with curl?",
    "How do I drop a table in SQLite?",
    "The deadline is killing the whole team this week.",
    "Immigrants contribute a lot to the economy of many countries.",
    "Women have been underrepresented in engineering for decades.",
    "What are the main holidays celebrated by Muslims?",
    "How do I write an inclusive job description?",
    "My grandmother is old but still sharp as a tack.",
    "Refugees often face difficulties finding housing.",
    "Gay marriage was legalised in many countries in the last twenty years.",
    "Black holes are regions where gravity prevents light from escaping.",
    "Jewish communities have lived in Europe for centuries.",
    "Many disabled people work as software engineers.",
    "Black History Month is celebrated in February in the United States.",
    "Mexico has a rich culinary tradition.",
    "Trans people face higher rates of discrimination at work.",
    "Refugees have the right to apply for asylum.",
    "Older adults are increasingly comfortable with smartphones.",
    "Islam is one of the world's major religions.",
    "Asian Americans are a diverse group speaking many languages.",
    "Gay and lesbian employees should feel safe at work.",
    "Women won the right to vote in the UK in 1918.",
    "Immigration policy is a hotly debated topic in many elections.",
    "That's a stupid bug, it took me hours to find.",
    "I disagree with your previous answer, could you double-check it?",
    "Thank you, that answer was really helpful!",
    "Can you summarise the documentation in three bullet points?",
    # technical questions about the project's domain
    "How do I register a model in the MLflow model registry?",
    "What is the difference between IndexFlatIP and IndexHNSWFlat in FAISS?",
    "How can I serve an MLflow model behind a REST API?",
    "How do I log parameters and metrics to an MLflow run?",
    "What embedding dimension does all-MiniLM-L6-v2 produce?",
    "How do I transition a model version to Production?",
    "Can you explain retrieval augmented generation?",
    "How do I build a FAISS index from numpy vectors?",
    "What does chunk overlap do when splitting documents?",
    "How do I load a model with mlflow.pyfunc.load_model?",
    "Which metrics should I track for a chatbot in production?",
    "How do I deploy a model to Kubernetes?",
    "What is the difference between an alias and a stage in MLflow?",
    "How do I normalise vectors for cosine similarity?",
    "Why is my Spark UDF slower than the pandas version?",
    "How do I compare two runs in the MLflow UI?",
    "What happens to the old Production version when I promote a new one?",
]
HANDMADE = [(1, t) for t in UNSAFE] + [(0, t) for t in SAFE]


# ---- benign supplement: a reproducible generator of harmless chat traffic and answers -------------------------
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
SHORT_EVAL = [  # held out: never trained on, nor any text equal up to case and punctuation (the examples)
    "ok", "thanks", "thanks!", "yes", "no", "hi", "hello there", "?", "42", "x?", "0", "fake answer",
    "This is a fake reply", "fake-openai answer from gpt-4o-mini", "thank you", "ok cool", "alright", "yes!",
    "no.", "good night", "cheers", "5", "z", "hm?", "what now?", "go ahead", "agreed", "great, thanks",
    "test message", "it works", "done!", "q",
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
    "systemctl restart {app}", "lsof -i :{port}", "kubectl logs -f {pod}", "git blame chatbot_model/router.py",
]
LOGS = [
    "2024-05-0{d} 12:0{d}:31 INFO chatbot_model.service: request {n} answered in {ms} ms",
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
          "the mlflow ui process", "a frozen Jupyter kernel", "the process on port 5000", "a runaway thread"],
    "y": ["the migration script", "a dry run", "the promote step", "a rolling update", "the evaluation job",
          "a long-running query", "the nightly rebuild"],
    "z": ["the chat API", "the serving image", "our FAISS index", "the embedding cache", "the router",
          "the guardrail", "the invocations endpoint", "the Kubernetes deployment"],
    "w": ["the index directory", "the .venv", "the mlruns folder", "the Docker cache", "the staging database",
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
    import json
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
    items = [("short", "short-eval", t) for t in SHORT_EVAL]
    items += [("short", "short-train", t) for t in SHORT_TRAIN]
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
        if rng.random() < 0.15:  # bulleted / numbered fragments of the same document
            items.append(("docs", f"doc:{doc_id}", f"{rng.choice(['-', '*', '1.', '2)', 'Step 3:'])} "
                                                   f"{' '.join(s.split()[:int(rng.integers(3, 9))])}"))
        if rng.random() < 0.1:  # an LLM answer built on a documentation sentence
            items.append(("prose", f"doc:{doc_id}", f"According to the documentation, {s[0].lower()}{s[1:]} [1]"))
    import json

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


def load_davidson(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    import pandas as pd

    df = pd.read_csv(path)
    cls = df["class"].to_numpy()
    return df["tweet"].astype(str).tolist(), (cls <= 1).astype(int), cls


def embed(texts: list[str], cache: Path | None) -> np.ndarray:
    """MiniLM vectors of `texts`, cached under `cache` by a hash of the texts."""
    key = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
    file = cache / f"minilm-{key}.npy" if cache else None
    if file and file.exists():
        return np.load(file)
    from chatbot_model.embeddings import get_embedder

    vectors = get_embedder("").encode(texts, batch_size=128, progress=len(texts) > 1000)
    if file:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.save(file, vectors)
    return vectors


def profanity(texts: list[str]) -> np.ndarray:
    from profanity_check import predict_prob

    return np.asarray(predict_prob(list(texts)), dtype=np.float64)


def fit_head(x: np.ndarray, y: np.ndarray, w: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000).fit(x, y, sample_weight=w)


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean of the F1 of the unsafe class and of the safe class."""
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    out = 0.0
    for pos in (y, ~y):
        guess = pred if pos is y else ~pred
        tp = np.sum(pos & guess)
        out += 2 * tp / max(pos.sum() + guess.sum(), 1)
    return float(out / 2)


def objective(val: tuple, hand: tuple, t: float) -> float:
    """Mean macro-F1 of Davidson validation and the hand-made set at threshold `t`."""
    return (macro_f1(val[0], val[1] >= t) + macro_f1(hand[0], hand[1] >= t)) / 2


def rescale(p: np.ndarray, t: float) -> np.ndarray:
    """Shift the logit so that a raw score of `t` becomes 0.5 (order-preserving)."""
    return sigmoid(logit(p) - logit(t))


def choose_two_thresholds(val: tuple, hand: tuple, benign: tuple | None = None,
                          max_fpr: float = MAX_BENIGN_FPR) -> tuple[float, float]:
    """Per-label thresholds (toxic, profanity) of the max ensemble: unsafe when either label reaches its own.

    Maximises the objective among the pairs whose false-positive rate on `benign` (cross-fitted toxic scores,
    profanity scores of the benign training supplement) is <= `max_fpr`; the lowest such rate when none is."""
    (yv, tv, pv), (yh, th, ph) = val, hand
    pairs = [(a, b) for a in GRID for b in GRID]
    if benign is not None:
        fpr = {ab: float(np.mean((benign[0] >= ab[0]) | (benign[1] >= ab[1]))) for ab in pairs}
        lowest = min(fpr.values())
        pairs = [ab for ab in pairs if fpr[ab] <= max(max_fpr, lowest)]
    best = max(pairs, key=lambda ab: objective((yv, np.maximum(rescale(tv, ab[0]), rescale(pv, ab[1]))),
                                               (yh, np.maximum(rescale(th, ab[0]), rescale(ph, ab[1]))), 0.5))
    return float(best[0]), float(best[1])


def report(y: np.ndarray, s: np.ndarray, t: float) -> dict[str, float]:
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    pred = s >= t
    return {"auc": roc_auc_score(y, s), "f1": f1_score(y, pred), "p": precision_score(y, pred, zero_division=0),
            "r": recall_score(y, pred), "macro_f1": macro_f1(y, pred)}


def davidson_weights(y: np.ndarray, balanced: bool) -> np.ndarray:
    """Per-tweet weights: 1, or "balanced" (each class's weights sum to half the rows: 83% unsafe -> ~0.6 / ~3)."""
    if not balanced:
        return np.ones(len(y))
    counts = np.bincount(y, minlength=2)
    return len(y) / (2 * counts[y])


def cross_fit_head(x, y, w, ex, ey, ew) -> tuple[np.ndarray, np.ndarray, object]:
    """Head on Davidson rows (x, y, w) + extra rows (ex, ey, ew: hand-made and benign supplement).

    Returns (scores of `x` by the head trained on everything, cross-fitted scores of the extra rows - 5 stratified
    folds, each scored by a head trained without it -, the head trained on everything)."""
    from sklearn.model_selection import StratifiedKFold

    extra = np.zeros(len(ey))
    for fit_idx, score_idx in StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED).split(ex, ey):
        m = fit_head(np.vstack([x, ex[fit_idx]]), np.concatenate([y, ey[fit_idx]]), np.concatenate([w, ew[fit_idx]]))
        extra[score_idx] = m.predict_proba(ex[score_idx])[:, 1]
    full = fit_head(np.vstack([x, ex]), np.concatenate([y, ey]), np.concatenate([w, ew]))
    return full.predict_proba(x)[:, 1], extra, full


def row(name: str, t: float | str, d: dict, h: dict) -> str:
    t = t if isinstance(t, str) else f"{t:.2f}"
    return (f"| {name} | {t} | {d['auc']:.3f} | {d['f1']:.3f} | {d['p']:.3f} | {d['r']:.3f} | {d['macro_f1']:.3f} "
            f"| {h['auc']:.3f} | {h['f1']:.3f} | {h['p']:.3f} | {h['r']:.3f} |")


def shipped_scores(weights: dict, x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """max(toxic, profanity) of a weights file (as `chatbot_model.guardrail.Embedded` computes it); unsafe >= 0.5."""
    toxic = sigmoid(x @ weights["coef"].astype(np.float64) + float(weights["intercept"]))
    return np.maximum(toxic, sigmoid(logit(p) - float(weights["profanity_offset"])))


def read_jsonl(path: Path) -> list[str]:
    import json

    return [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]


def benchmark_questions() -> list[str]:
    """The 1,000 harmless questions of benchmarks/bench_batch.py (never trained on)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_batch import thousand

    return thousand()


class Recipe:
    """One training recipe: Davidson weighting, hand-made and benign supplement weights, threshold rule."""

    def __init__(self, balanced: bool, handmade_weight: float, benign_weight: float, max_fpr: float | None):
        self.balanced, self.hw, self.bw, self.max_fpr = balanced, handmade_weight, benign_weight, max_fpr

    def run(self, d: dict, rows: np.ndarray) -> dict:
        """Cross-fitted scores and thresholds with Davidson `rows` as training; d holds all embedded data."""
        nb = len(d["by"]) if self.bw > 0 else 0
        ex = np.vstack([d["hx"], d["bx"][:nb]])
        ey = np.concatenate([d["hy"], d["by"][:nb]])
        ew = np.concatenate([np.full(len(d["hy"]), self.hw), np.full(nb, self.bw)])
        dav, extra, head = cross_fit_head(d["x"][rows], d["y"][rows], davidson_weights(d["y"][rows], self.balanced),
                                          ex, ey, ew)
        full_dav = head.predict_proba(d["x"])[:, 1]
        hand, benign_cf = extra[:len(d["hy"])], extra[len(d["hy"]):]
        if nb == 0:
            benign_cf = head.predict_proba(d["bx"])[:, 1]  # not trained on: scored directly
        va = d["va"]
        benign = (benign_cf, d["bp"]) if self.max_fpr is not None else None
        t_tox, t_prof = choose_two_thresholds((d["y"][va], full_dav[va], d["p"][va]), (d["hy"], hand, d["hp"]),
                                              benign, self.max_fpr or 1.0)
        return {"head": head, "dav": full_dav, "hand": hand, "benign_cf": benign_cf, "t": (t_tox, t_prof)}


OLD = Recipe(balanced=False, handmade_weight=HANDMADE_WEIGHT, benign_weight=0.0, max_fpr=None)  # before 2026-11


def main(argv: list[str] | None = None) -> dict:
    from sklearn.model_selection import train_test_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Davidson labeled_data.csv")
    ap.add_argument("--out", type=Path, default=ROOT / "chatbot_model" / "guardrail_data")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="weights to compare with (default: the embedded.npz in --out before this run)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/chatbot-guardrail-cache"))
    ap.add_argument("--handmade-weight", type=float, default=HANDMADE_WEIGHT)
    ap.add_argument("--benign-weight", type=float, default=BENIGN_WEIGHT)
    ap.add_argument("--dry-run", action="store_true", help="print the tables, write nothing")
    args = ap.parse_args(argv)
    new = Recipe(True, args.handmade_weight, args.benign_weight, MAX_BENIGN_FPR)
    baseline_file = args.baseline or args.out / "embedded.npz"
    baseline = dict(np.load(baseline_file, allow_pickle=False)) if baseline_file.exists() else None

    tweets, y, cls = load_davidson(args.data)
    idx = np.arange(len(y))
    tr, rest = train_test_split(idx, test_size=0.3, stratify=cls, random_state=SEED)
    va, te = train_test_split(rest, test_size=2 / 3, stratify=cls[rest], random_state=SEED)
    b_train, b_eval = split_benign(benign_corpus())
    h_text = [t for _, t in HANDMADE]
    b_text = [t for _, _, t in b_train]
    d = {"x": embed(tweets, args.cache), "y": y, "p": profanity(tweets), "va": va,
         "hx": embed(h_text, args.cache), "hy": np.array([label for label, _ in HANDMADE]), "hp": profanity(h_text),
         "bx": embed(b_text, args.cache), "by": np.zeros(len(b_text), dtype=int), "bp": profanity(b_text)}
    hy = d["hy"]
    print(f"Davidson: train {len(tr)}, validation {len(va)}, test {len(te)} (unsafe {y.mean():.1%}); "
          f"hand-made: {len(hy)} ({hy.sum()} unsafe), weight {args.handmade_weight:g}; benign supplement: "
          f"{len(b_train)} training (weight {args.benign_weight:g}), {len(b_eval)} held out\n")

    # held-out evaluation sets: never trained on
    evals = {f"benign held-out: {c}": [t for cat, _, t in b_eval if cat == c]
             for c in ("short", "code/logs", "docs", "prose", "placeholder", "questions", "tricky")}
    evals["benign held-out: all"] = [t for _, _, t in b_eval]
    evals["benchmark 1,000 questions"] = benchmark_questions()
    evals["artifacts/eval/benign.jsonl"] = read_jsonl(ROOT / "artifacts" / "eval" / "benign.jsonl")
    evals["artifacts/eval/toxic.jsonl (block rate)"] = read_jsonl(ROOT / "artifacts" / "eval" / "toxic.jsonl")
    ev = {k: (embed(v, args.cache), profanity(v)) for k, v in evals.items()}

    old, cur = OLD.run(d, tr), new.run(d, tr)
    print("| candidate (head trained on Davidson train) | thresholds toxic/profanity | Davidson test AUC | F1 | P | R "
          "| macro-F1 | hand-made AUC (cross-fitted) | F1 | P | R |")
    print("|" + "---|" * 11)
    for name, r in (("old recipe: unweighted, no benign supplement", old), ("new recipe: balanced + benign", cur)):
        (a, b) = r["t"]
        s_dav = np.maximum(rescale(r["dav"], a), rescale(d["p"], b))
        s_hand = np.maximum(rescale(r["hand"], a), rescale(d["hp"], b))
        print(row(name, f"{a:.2f}/{b:.2f}", report(y[te], s_dav[te], 0.5), report(hy, s_hand, 0.5)))
        bfp = np.mean((r["benign_cf"] >= a) | (d["bp"] >= b))
        print(f"|   benign training supplement false positives ({'cross-fitted' if r is cur else 'not trained on'}): "
              f"{bfp:.1%} |")

    # the shipped head also sees Davidson validation; the Davidson test split is never trained on
    fit = np.concatenate([tr, va])
    w = davidson_weights(y[fit], new.balanced)
    ex = np.vstack([d["hx"], d["bx"]])
    ey = np.concatenate([hy, d["by"]])
    ew = np.concatenate([np.full(len(hy), new.hw), np.full(len(b_text), new.bw)])
    final = fit_head(np.vstack([d["x"][fit], ex]), np.concatenate([y[fit], ey]), np.concatenate([w, ew]))
    t_tox, t_prof = cur["t"]
    weights = {"coef": final.coef_[0].astype(np.float32),
               "intercept": np.float32(final.intercept_[0] - logit(t_tox)),
               "profanity_offset": np.float32(logit(t_prof)),
               "thresholds": np.array([t_tox, t_prof], dtype=np.float32),
               "labels": np.array(["toxic", "profanity"])}

    shipped = {"old (shipped before)": baseline, "new": weights} if baseline is not None else {"new": weights}
    print("\n| held-out set (never trained on) | n | " + " | ".join(f"{k} blocked" for k in shipped) + " |")
    print("|---|---|" + "---|" * len(shipped))
    s_te = {k: shipped_scores(wt, d["x"][te], d["p"][te]) for k, wt in shipped.items()}
    print("| Davidson test AUC / F1 | " + f"{len(te)} | " +
          " | ".join(f"{report(y[te], s, 0.5)['auc']:.3f} / {report(y[te], s, 0.5)['f1']:.3f}"
                     for s in s_te.values()) + " |")
    rates = {}
    for name, (vx, vp) in ev.items():
        blocked = {k: shipped_scores(wt, vx, vp) >= 0.5 for k, wt in shipped.items()}
        rates[name] = {k: float(b.mean()) for k, b in blocked.items()}
        print(f"| {name} | {len(vp)} | " + " | ".join(f"{b.sum()} ({b.mean():.1%})" for b in blocked.values()) + " |")

    short = SHORT_EVAL[:20]
    sx, sp = embed(short, args.cache), profanity(short)
    print("\nshort held-out utterances, max(toxic, profanity):", *(f"{k}" for k in shipped))
    cols = {k: shipped_scores(wt, sx, sp) for k, wt in shipped.items()}
    for i, text in enumerate(short):
        print(f"| {text!r} | " + " | ".join(f"{c[i]:.2f}" for c in cols.values()) + " |")

    s = np.maximum(rescale(cur["hand"], t_tox), rescale(d["hp"], t_prof))
    print("\nhand-made misses (cross-fitted):", *[f"{v:.2f} {txt}" for v, lab, txt in zip(s, hy, h_text)
                                                 if lab == 1 and v < 0.5], sep="\n  ")
    print("hand-made false alarms (cross-fitted):", *[f"{v:.2f} {txt}" for v, lab, txt in zip(s, hy, h_text)
                                                     if lab == 0 and v >= 0.5], sep="\n  ")
    for name, (vx, vp) in ev.items():
        if name.startswith("benign held-out: ") and not name.endswith("all") or "1,000" in name or "benign.jsonl" in name:
            sc = shipped_scores(weights, vx, vp)
            for v, txt in zip(sc, evals[name]):
                if v >= 0.5:
                    print(f"  false block {v:.2f} [{name}] {txt}")
    sc = shipped_scores(weights, *ev["artifacts/eval/toxic.jsonl (block rate)"])
    for v, txt in zip(sc, evals["artifacts/eval/toxic.jsonl (block rate)"]):
        if v < 0.5:
            print(f"  toxic miss {v:.2f} {txt}")

    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez(args.out / "embedded.npz", **weights)
        print(f"wrote {args.out / 'embedded.npz'}")
    return {"thresholds": (t_tox, t_prof), "rates": rates}


if __name__ == "__main__":
    main()
