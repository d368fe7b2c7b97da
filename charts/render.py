#!/usr/bin/env python3
"""Render, lint and package the vmrecover chart with the Helm SDK (PyPI helm-python-sdk, the
Helm v4 Go SDK behind ctypes; no helm binary, no network). Run it with the venv .ci/run makes:

    python3 -m venv .venv && .venv/bin/pip install helm-python-sdk==0.2.2

    .venv/bin/python charts/render.py deploy [--check]   re-render deploy/, monitoring/vmrecover-rules.yaml,
                                                          addons/vmrecover-cloudinit.yaml, docs/rbac.md
                                                          (and the chart's copies of systemd/*.service)
    .venv/bin/python charts/render.py package [--check]  addons/repo/vmrecover-<version>.tgz + index.yaml
    .venv/bin/python charts/render.py lint
    .venv/bin/python charts/render.py template [--chart DIR|TGZ] [--values FILE]... [--set-json JSON]
                                     [--name vmrecover] [--namespace harvester-system]
                                     [--kube-version X.Y.Z]  the cluster's Kubernetes version (the
                                     offline SDK reports its own and no policy API): passed as
                                     the chart's kubeVersion value
                                     [--hooks]  also the `helm.sh/hook` objects (the Helm test
                                     Pod); left out by default, as `helm install` applies none
    .venv/bin/python charts/render.py pull-template --repo URL --version V [--addon FILE] ...
                                     the Harvester add-on path: pull the chart from an HTTP Helm
                                     repository (as the helm-install Job does) and render it with
                                     the Addon's valuesContent

`--check` changes nothing and exits 1 naming every file that is not current.

Objects annotated `helm.sh/hook` (templates/tests/: `helm test`'s Pod) are never part of what
is applied: Helm creates a test hook only for `helm test`, so deploy/, `template` and
`pull-template` leave them out unless `--hooks` asks for them.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import helm_python as helm

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "vmrecover"
RELEASE = "vmrecover"
NAMESPACE = "harvester-system"
PYTHON = ".venv/bin/python"

# helm's install order (pkg/release/v1/util/kind_sorter.go), for the kinds this chart has.
KIND_ORDER = [
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "CronJob",
]

GENERATED = (
    "# GENERATED from charts/vmrecover/{source} with the chart's default values (release\n"
    "# {release!r} in {namespace!r}{extra}). Do not edit: change the chart, then run\n"
    "#   {python} charts/render.py deploy\n"
)


def load_yaml_values(path: Path) -> dict:
    return helm.values_from_yaml(path.read_text())


def split_docs(text: str) -> list[str]:
    """The non-empty documents of a YAML stream (comments kept with the document they head)."""
    docs, cur = [], []
    for line in text.splitlines(keepends=True):
        if line.rstrip() == "---":
            docs.append("".join(cur))
            cur = []
        else:
            cur.append(line)
    docs.append("".join(cur))
    out = []
    for d in docs:
        body = [l for l in d.splitlines() if l.strip() and not l.lstrip().startswith("#")]
        if body:
            out.append(d.strip("\n") + "\n")
    return out


def doc_kind(doc: str) -> str:
    for line in doc.splitlines():
        if line.startswith("kind:"):
            return line.split(":", 1)[1].strip()
    return ""


def is_hook(doc: str) -> bool:
    """Whether a document is a Helm hook (`metadata.annotations["helm.sh/hook"]`)."""
    return any(line.strip().startswith("helm.sh/hook:") for line in doc.splitlines())


def render(
    chart: str | Path, values: dict | None, name: str, namespace: str, hooks: bool = False
) -> dict[str, str]:
    """Template path (relative to templates/) -> rendered text, empty renders dropped; hook
    documents (the Helm test Pod) only with `hooks`."""
    if str(chart).endswith(".tgz"):
        c = helm.Chart.load_archive(Path(chart).read_bytes())
    else:
        c = helm.Chart.load(str(chart))
    with c:
        out = c.render(values or {}, name=name, namespace=namespace, is_install=True)
    rendered = {}
    for path, text in out.items():
        rel = path.split("/templates/", 1)[-1]
        if rel.endswith("NOTES.txt"):
            continue
        docs = [d for d in split_docs(text) if hooks or not is_hook(d)]
        if not docs:
            continue
        rendered[rel] = text.strip("\n") + "\n" if len(docs) == len(split_docs(text)) else "---\n".join(docs)
    return rendered


def stream(rendered: dict[str, str]) -> str:
    """All documents as one stream, in helm's install order, each with its `# Source:` line."""
    docs = []
    for path in sorted(rendered):
        for d in split_docs(rendered[path]):
            docs.append((path, d))
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    docs.sort(key=lambda pd: order.get(doc_kind(pd[1]), len(order)))
    return "".join(f"---\n# Source: vmrecover/templates/{p}\n{d}" for p, d in docs)


def check_or_write(path: Path, text: str, check: bool, stale: list[str]) -> None:
    old = path.read_text() if path.exists() else None
    if old == text:
        return
    if check:
        diff = "".join(
            difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{path.relative_to(REPO)} (committed)",
                f"{path.relative_to(REPO)} (rendered now)",
                n=1,
            )
        )
        stale.append(f"{path.relative_to(REPO)} is not current:\n{diff[:4000]}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")


def rules_of(prometheusrule: str) -> str:
    """The `groups:` of a rendered PrometheusRule, as a plain Prometheus rules file."""
    lines = prometheusrule.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("spec:"))
    body = [l[2:] if l.startswith("  ") else l for l in lines[start + 1 :]]
    return "\n".join(body).strip("\n") + "\n"


def rule_comments(doc: str) -> list[str]:
    """The comment right above each `- apiGroups:` rule of a Role/ClusterRole, in order."""
    out, cur = [], []
    for line in doc.splitlines():
        t = line.strip()
        if t.startswith("#"):
            cur.append(t.lstrip("#").strip())
        elif t.startswith("- apiGroups:"):
            out.append(" ".join(cur))
            cur = []
        else:
            cur = []
    return out


def rbac_doc(rbac: str) -> str:
    """docs/rbac.md: every Role and ClusterRole of the rendered rbac.yaml and fence.yaml, rule by
    rule, with the chart's comment on the rule, and whom each is bound to."""
    docs = split_docs(rbac)
    objs = [(d, helm.values_from_yaml(d)) for d in docs]
    bindings = {}
    for _, o in objs:
        if o.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
            subj = ", ".join(f"{x['kind']} `{x.get('namespace', '')}/{x['name']}`" for x in o.get("subjects", []))
            bindings[(o["roleRef"]["kind"], o["roleRef"]["name"], o["metadata"].get("namespace", ""))] = subj
    lines = [
        "# vmrecover's permissions",
        "",
        "<!-- GENERATED from charts/vmrecover/templates/rbac.yaml and fence.yaml (default values, release",
        f"'{RELEASE}' in '{NAMESPACE}') by `{PYTHON} charts/render.py deploy`; tests/e2e/chart_render.rs",
        "checks it is current. Do not edit: change the chart. -->",
        "",
        "Exactly the requests `vmrecover run`, `status` and `agent` make: `tests/e2e/deploy_rbac.rs` runs",
        "the full recovery under these rules and proves, rule by rule and verb by verb, that removing",
        "any one of them breaks a named part of it. Nothing else is granted: no `update`, no delete of",
        "VMs or VMIs, no write to volumes or attachments (read as evidence only), no secrets, no",
        "`nodes/status`. RBAC cannot say \"only finalizers\" or \"only my node\": the chart's admission",
        "policy (docs/safety.md) bounds each node's agent further.",
        "",
        "The `vmrecover-fence` roles are the fence identity's: a person's fenced-node run (docs/runbook.md,",
        "\"A node that never comes back\"), proven verb by verb by `tests/e2e/deploy_rbac.rs`. On",
        "Kubernetes 1.30+ the policy `vmrecover-fence-restriction` refuses every write of it unless the",
        "params ConfigMap `vmrecover-fence-params` names a node (`data.node`, set only while a person's",
        "procedure runs), and then allows only that node's fenced recovery.",
        "",
    ]
    for doc, o in objs:
        kind = o.get("kind")
        if kind not in ("Role", "ClusterRole"):
            continue
        ns = o["metadata"].get("namespace", "")
        where = "cluster-wide" if kind == "ClusterRole" else f"in namespace `{ns}`"
        bound = bindings.get((kind, o["metadata"]["name"], ns), "nothing")
        lines += [
            f"## {kind} `{o['metadata']['name']}` ({where})",
            "",
            f"Bound to {bound}.",
            "",
            "| API group | resources | only names | verbs | why |",
            "|---|---|---|---|---|",
        ]
        for rule, why in zip(o.get("rules", []), rule_comments(doc)):
            group = ", ".join(f"`{g}`" if g else "core" for g in rule.get("apiGroups", []))
            res = ", ".join(f"`{r}`" for r in rule.get("resources", []))
            names = ", ".join(f"`{n}`" for n in rule.get("resourceNames", [])) or "any"
            verbs = ", ".join(rule.get("verbs", []))
            lines.append(f"| {group} | {res} | {names} | {verbs} | {why.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


# The oldest Kubernetes a Harvester release runs (1.4.0: harvester-installer scripts/version-rke2).
OLDEST_KUBERNETES = "1.29.9"


def cmd_deploy(args) -> int:
    stale: list[str] = []
    # The chart carries the host units (its CloudInit writes them); systemd/ is their source.
    for unit in ("vmrecover-boot.service", "vmrecover.service"):
        src = (REPO / "systemd" / unit).read_text()
        check_or_write(CHART / "files" / unit, src, args.check, stale)
    # deploy/ applies on every Kubernetes Harvester runs: rendered for the oldest (Harvester
    # 1.4.0's 1.29.9: the AppArmor annotation, not the 1.30 field); the admission policy, which
    # needs 1.30, is rendered on its own into deploy/admissionpolicy.yaml (kept out of the
    # kustomization).
    oldest = {"kubeVersion": OLDEST_KUBERNETES}
    defaults = render(CHART, oldest, RELEASE, NAMESPACE)
    policy = render(CHART, {**oldest, "admissionPolicy": {"enabled": True}}, RELEASE, NAMESPACE)
    defaults["admissionpolicy.yaml"] = policy["admissionpolicy.yaml"]
    expected = {}
    for rel, text in defaults.items():
        extra = f"; kubeVersion={OLDEST_KUBERNETES}"
        if rel == "admissionpolicy.yaml":
            extra += "; admissionPolicy.enabled=true (Kubernetes 1.30+ only)"
        header = GENERATED.format(
            source=f"templates/{rel}", release=RELEASE, namespace=NAMESPACE, extra=extra, python=PYTHON
        )
        expected[REPO / "deploy" / Path(rel).name] = header + text
    # Rendered files of an earlier chart that no template makes any more.
    for old in sorted((REPO / "deploy").glob("*.yaml")):
        if old.name == "kustomization.yaml" or old in expected:
            continue
        if args.check:
            stale.append(f"{old.relative_to(REPO)} is no longer rendered by the chart (delete it)")
        else:
            old.unlink()
            print(f"removed {old.relative_to(REPO)}")
    for path, text in expected.items():
        check_or_write(path, text, args.check, stale)
    check_or_write(REPO / "docs" / "rbac.md", rbac_doc(defaults["rbac.yaml"] + "---\n" + defaults["fence.yaml"]), args.check, stale)
    kust = REPO / "deploy" / "kustomization.yaml"
    kust_text = kust.read_text() if kust.exists() else ""
    # The admission policy stays out of the kustomization (it needs Kubernetes 1.30+).
    for path in expected:
        listed = f"  - {path.name}\n" in kust_text
        if path.name == "admissionpolicy.yaml" and listed:
            stale.append("deploy/kustomization.yaml must not list admissionpolicy.yaml (1.30+ only)")
        elif path.name != "admissionpolicy.yaml" and not listed:
            stale.append(f"deploy/kustomization.yaml does not list {path.name}")

    # Optional parts, each rendered with its value on.
    monitoring = render(
        CHART,
        {"metrics": {"prometheusRule": {"enabled": True}}},
        RELEASE,
        NAMESPACE,
    )
    header = GENERATED.format(
        source="templates/prometheusrule.yaml (spec.groups)",
        release=RELEASE,
        namespace=NAMESPACE,
        extra="; metrics.prometheusRule.enabled=true",
        python=PYTHON,
    )
    header += "# A plain Prometheus rules file; monitoring/vmrecover-rules.test.yaml unit-tests it.\n"
    check_or_write(
        REPO / "monitoring" / "vmrecover-rules.yaml",
        header + rules_of(monitoring["prometheusrule.yaml"]),
        args.check,
        stale,
    )
    cloudinit = render(CHART, {"hostUnits": {"cloudInit": {"enabled": True}}}, RELEASE, NAMESPACE)
    header = GENERATED.format(
        source="templates/cloudinit.yaml",
        release=RELEASE,
        namespace=NAMESPACE,
        extra="; hostUnits.cloudInit.enabled=true",
        python=PYTHON,
    )
    check_or_write(
        REPO / "addons" / "vmrecover-cloudinit.yaml",
        header + cloudinit["cloudinit.yaml"],
        args.check,
        stale,
    )
    if stale:
        print("\n\n".join(stale), file=sys.stderr)
        print(f"\nre-render with: {PYTHON} charts/render.py deploy", file=sys.stderr)
        return 1
    print("deploy/, monitoring/ and addons/vmrecover-cloudinit.yaml are the chart's rendering")
    return 0


def chart_files(chart_dir: Path) -> dict[str, bytes]:
    """The files `helm package` puts into the archive (relative paths), .helmignore applied
    for the patterns this chart uses."""
    ignore = [l.strip() for l in (chart_dir / ".helmignore").read_text().splitlines() if l.strip()]
    out = {}
    for p in sorted(chart_dir.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(chart_dir).as_posix()
        name = p.name
        if any(
            (pat.startswith("*") and name.endswith(pat[1:])) or name == pat for pat in ignore
        ):
            continue
        out[rel] = p.read_bytes()
    return out


def archive_files(tgz: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(tgz, "r:gz") as t:
        for m in t.getmembers():
            if m.isfile():
                rel = m.name.split("/", 1)[1]
                out[rel] = t.extractfile(m).read()
    return out


def cmd_package(args) -> int:
    repo_dir = REPO / "addons" / "repo"
    version = helm.Chart.load(str(CHART)).version
    tgz = repo_dir / f"vmrecover-{version}.tgz"
    problems = []
    if args.check:
        if not tgz.exists():
            problems.append(f"{tgz.relative_to(REPO)} is missing")
        else:
            want, have = chart_files(CHART), archive_files(tgz)
            for rel in sorted(set(want) | set(have)):
                if rel not in have:
                    problems.append(f"{rel} is in the chart but not in {tgz.name}")
                elif rel not in want:
                    problems.append(f"{rel} is in {tgz.name} but not in the chart")
                elif rel == "Chart.yaml":
                    # helm package writes Chart.yaml re-serialised: compare what it says.
                    if helm.values_from_yaml(want[rel].decode()) != helm.values_from_yaml(have[rel].decode()):
                        problems.append(f"Chart.yaml differs between the chart and {tgz.name}")
                elif want[rel] != have[rel]:
                    problems.append(f"{rel} differs between the chart and {tgz.name}")
            index = (repo_dir / "index.yaml").read_text() if (repo_dir / "index.yaml").exists() else ""
            digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
            if f"digest: {digest}" not in index:
                problems.append(f"addons/repo/index.yaml does not carry {tgz.name}'s digest {digest}")
            if f"- vmrecover-{version}.tgz" not in index:
                problems.append(f"addons/repo/index.yaml does not list vmrecover-{version}.tgz (relative URL)")
        others = [p.name for p in repo_dir.glob("*.tgz") if p != tgz]
        if others:
            problems.append(f"addons/repo has archives of other versions: {others}")
        if problems:
            print("\n".join(problems), file=sys.stderr)
            print(f"\nre-package with: {PYTHON} charts/render.py package", file=sys.stderr)
            return 1
        print(f"{tgz.relative_to(REPO)} and index.yaml are the chart, packaged")
        return 0
    repo_dir.mkdir(parents=True, exist_ok=True)
    for old in repo_dir.glob("*.tgz"):
        old.unlink()
    path = helm.package(str(CHART), destination=str(repo_dir))
    print(f"wrote {Path(path).relative_to(REPO)}")
    # Relative URLs: any static HTTP server at any address serves the directory as it is.
    helm.repo_index_generate(str(repo_dir))
    print(f"wrote {(repo_dir / 'index.yaml').relative_to(REPO)}")
    return 0


def cmd_lint(args) -> int:
    failed = False
    for values in [{}] + [json.loads(v) for v in args.set_json]:
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        for m in report.get("messages", []):
            sev = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}.get(m.get("severity"), "?")
            print(f"[{sev}] {m.get('path')}: {m.get('error')}  (values {json.dumps(values)})")
            if m.get("severity", 0) >= 2:
                failed = True
        for e in report.get("errors", []) or []:
            print(f"[ERROR] {e}  (values {json.dumps(values)})")
            failed = True
    print("lint: " + ("FAILED" if failed else "ok"))
    return 1 if failed else 0


def merged_values(args) -> dict:
    values: dict = {}
    sources = []
    for f in args.values or []:
        sources.append(load_yaml_values(Path(f)))
    if getattr(args, "addon", None):
        sources.append(addon_values(Path(args.addon)))
    for j in args.set_json or []:
        sources.append(json.loads(j))
    if getattr(args, "kube_version", None):
        sources.append({"kubeVersion": args.kube_version})
    for s in sources:
        values = deep_merge(values, s)
    return values


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def addon_values(addon: Path) -> dict:
    """The Addon's spec.valuesContent, parsed as the helm-install Job parses it."""
    doc = helm.values_from_yaml(addon.read_text())
    content = doc["spec"].get("valuesContent") or ""
    return helm.values_from_yaml(content) if content.strip() else {}


def refused(e: Exception) -> int:
    """A values file the chart refuses (values.schema.json, as `helm template` checks it)."""
    print(f"the chart refuses these values: {e}", file=sys.stderr)
    return 1


def cmd_template(args) -> int:
    # The SDK's render validates the merged values against values.schema.json, as Helm's
    # install, upgrade and template do (chartutil.ToRenderValues).
    try:
        rendered = render(args.chart, merged_values(args), args.name, args.namespace, args.hooks)
        sys.stdout.write(stream(rendered))
    except helm.HelmValuesError as e:
        return refused(e)
    return 0


def cmd_pull_template(args) -> int:
    addon = helm.values_from_yaml(Path(args.addon).read_text()) if args.addon else {}
    spec = addon.get("spec", {})
    chart = spec.get("chart", "vmrecover")
    version = args.version or spec.get("version")
    with tempfile.TemporaryDirectory() as d:
        index = helm.repo_index(args.repo)
        versions = [e.get("version") for e in index.get("entries", {}).get(chart, [])]
        if version not in versions:
            print(f"{args.repo}/index.yaml has no {chart} {version} (it has {versions})", file=sys.stderr)
            return 1
        helm.pull(chart, repo_url=args.repo, version=version, destination=d)
        tgz = Path(d) / f"{chart}-{version}.tgz"
        print(f"# pulled {args.repo} {chart} {version} ({tgz.stat().st_size} bytes)", file=sys.stderr)
        try:
            rendered = render(tgz, merged_values(args), args.name, args.namespace, args.hooks)
            sys.stdout.write(stream(rendered))
        except helm.HelmValuesError as e:
            return refused(e)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("deploy")
    d.add_argument("--check", action="store_true")
    k = sub.add_parser("package")
    k.add_argument("--check", action="store_true")
    li = sub.add_parser("lint")
    li.add_argument("--set-json", action="append", default=[], help="also lint with these values")
    for name in ("template", "pull-template"):
        t = sub.add_parser(name)
        t.add_argument("--values", action="append", default=[])
        t.add_argument("--set-json", action="append", default=[])
        t.add_argument("--name", default=RELEASE)
        t.add_argument("--namespace", default=NAMESPACE)
        t.add_argument("--addon", help="an Addon manifest: its spec.valuesContent are the values")
        t.add_argument("--kube-version", help="the cluster's Kubernetes version (value kubeVersion)")
        t.add_argument("--hooks", action="store_true", help="also the helm.sh/hook objects (helm test's Pod)")
        if name == "template":
            t.add_argument("--chart", default=str(CHART))
        else:
            t.add_argument("--repo", required=True)
            t.add_argument("--version")
    args = p.parse_args()
    return {
        "deploy": cmd_deploy,
        "package": cmd_package,
        "lint": cmd_lint,
        "template": cmd_template,
        "pull-template": cmd_pull_template,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
