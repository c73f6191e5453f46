// Offline check of one rendered overlay (`kubectl kustomize ... | node check-rendered.mjs NAME`),
// without an API server:
//   1. every object against the Kubernetes JSON schemas bundled in kubernetes-models 4.5.1;
//   2. no unknown field anywhere: those schemas accept unknown fields, so a typo such as
//      `readinesProbe` would pass them and be dropped silently by a cluster. The models' type
//      declarations list every field of every type; the objects are walked against them;
//   3. what no schema knows: the kinds and names this arrangement consists of, and that its parts
//      fit (selectors, ports, the shared /dev/shm, the uid of the image, the overlay's purpose).
// Prints the objects it checked, or every problem found and exits 1.
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { parseAllDocuments } from "yaml";

const overlay = process.argv[2];
const overlays = ["base", "read-only-mirror", "native-sidecar", "podman", "node-replica"];
if (!overlays.includes(overlay)) {
  console.error(`usage: kubectl kustomize DIR | node check-rendered.mjs {${overlays.join("|")}}`);
  process.exit(2);
}
const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

// --- 1. Schemas -------------------------------------------------------------------------------
const docs = parseAllDocuments(readFileSync(0, "utf8"));
const objects = [];
for (const doc of docs) {
  if (doc.errors.length) problem("YAML", doc.errors.map((e) => e.message).join("; "));
  const object = doc.toJS();
  if (object) objects.push(object);
}
const id = (o) => `${o.kind}/${o.metadata?.name}`;
for (const object of objects) {
  let models;
  try {
    models = await import(`kubernetes-models/${object.apiVersion}`);
  } catch {
    problem(id(object), `unknown apiVersion ${object.apiVersion}`);
    continue;
  }
  const Model = models[object.kind];
  if (!Model) {
    problem(id(object), `unknown kind ${object.kind} in ${object.apiVersion}`);
    continue;
  }
  try {
    new Model(object).validate();
  } catch (e) {
    problem(id(object), `schema: ${e.message}`);
  }
}

// --- 2. Unknown fields ------------------------------------------------------------------------
// interface alias (e.g. IIoK8sApiCoreV1Probe) -> { field: declared type }
const require = createRequire(import.meta.url);
const interfaces = new Map();
function readDeclarations(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "_schemas" && entry.name !== "node_modules") readDeclarations(file);
      continue;
    }
    if (!entry.name.endsWith(".d.ts")) continue;
    const text = readFileSync(file, "utf8");
    const body = text.match(/export interface (I\w+)(?: extends [\w, ]+)? \{\n([\s\S]*?)\n\}/);
    const alias = text.match(/export \{ (I\w+) as (I\w+)/);
    if (!body || !alias || alias[1] !== body[1]) continue;
    const fields = {};
    for (const m of body[2].matchAll(/^ {4}"([^"]+)"\??: ([^;\n]+)/gm)) fields[m[1]] = m[2].trim();
    interfaces.set(alias[2], fields);
  }
}
readDeclarations(path.dirname(require.resolve("kubernetes-models/package.json")));
readDeclarations(path.dirname(require.resolve("@kubernetes-models/apimachinery/package.json")));

function walk(value, type, where) {
  const array = type.match(/^Array<(\w+)>$/);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, array[1], `${where}[${i}]`));
    return;
  }
  const fields = interfaces.get(type);
  // Scalars, quantities, int-or-string and free-form maps (labels, annotations) end the walk.
  if (!fields || value === null || typeof value !== "object" || Array.isArray(value)) return;
  for (const [key, v] of Object.entries(value)) {
    if (!(key in fields)) {
      problem(where, `unknown field '${key}' (${type.replace(/^IIoK8s(Api|ApimachineryPkgApis)/, "")})`);
      continue;
    }
    walk(v, fields[key], `${where}.${key}`);
  }
}
for (const object of objects) {
  const group = object.apiVersion.includes("/") ? object.apiVersion : `core/${object.apiVersion}`;
  const [g, v] = group.split("/");
  const prefix = g === "core" ? "Core" : g.split(".")[0].replace(/^./, (c) => c.toUpperCase());
  const type = `IIoK8sApi${prefix}${v.replace(/^./, (c) => c.toUpperCase())}${object.kind}`;
  if (!interfaces.has(type)) problem(id(object), `no type declaration ${type} to check fields with`);
  walk(object, type, id(object));
}
if (interfaces.size < 500) problem("check", `read only ${interfaces.size} type declarations`);

// --- 3. The arrangement -----------------------------------------------------------------------
const byKind = (kind) => objects.filter((o) => o.kind === kind);
// podman kube play ignores Services and NetworkPolicies: its overlay leaves them out. The node
// replica is a DaemonSet of its own, apart from the sidecar arrangement.
const kinds = objects.map((o) => o.kind).sort().join(",");
const expectedKinds = { podman: "Deployment", "node-replica": "DaemonSet" }[overlay] ??
  "Deployment,NetworkPolicy,Service";
if (kinds !== expectedKinds) problem("objects", `expected ${expectedKinds}, got ${kinds}`);
const expectedName = overlay === "node-replica" ? "shmdict-replica" : "shmdict-example";
for (const o of objects) {
  if (o.metadata?.name !== expectedName) problem(id(o), `expected the name ${expectedName}`);
  if (o.metadata?.labels?.["app.kubernetes.io/part-of"] !== "shmdict") {
    problem(id(o), "missing label app.kubernetes.io/part-of=shmdict");
  }
}
const [deployment] = byKind("Deployment");
const [service] = byKind("Service");
const [policy] = byKind("NetworkPolicy");
const [daemonSet] = byKind("DaemonSet");
if (deployment) checkPod(deployment, service, policy);
if (daemonSet) checkNodeReplica(daemonSet);

function subsetOf(selector, labels) {
  return Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v) &&
    Object.keys(selector ?? {}).length > 0;
}
function flagValue(args, flag) {
  const arg = (args ?? []).find((a) => a.startsWith(`${flag}=`));
  return arg?.slice(flag.length + 1);
}
function bytes(quantity) {
  const m = String(quantity).match(/^(\d+)(Ki|Mi|Gi)?$/);
  return m ? Number(m[1]) * { undefined: 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[m[2]] : NaN;
}

// The uid the image runs as (deploy/docker/Dockerfile's USER): the owner of every dict.
function imageUser() {
  const dockerfile = readFileSync(new URL("../../docker/Dockerfile", import.meta.url), "utf8");
  return Number(dockerfile.match(/^USER (\d+):(\d+)$/m)?.[1]);
}

// Probes on the gRPC health server the container's --health-listen names.
function checkHealthProbes(where, container) {
  const health = flagValue(container.args, "--health-listen");
  if (!health) {
    problem(where, "needs --health-listen");
    return;
  }
  const healthPort = Number(health.split(":").pop());
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    const p = container[probe];
    if (!p) {
      problem(where, `has no ${probe}`);
    } else if (p.grpc ? p.grpc.port !== healthPort : !p.exec?.command?.join(" ").includes(`:${healthPort} health`)) {
      problem(where, `${probe} does not ask the health server on port ${healthPort}`);
    }
  }
}

// The node replica (overlays/node-replica): one shmdict-replica per node, its dict in a
// memory-backed hostPath directory that the node's pods mount at /dev/shm, writes through a Unix
// socket in a second hostPath directory (never on the network).
function checkNodeReplica(daemonSet) {
  const where = id(daemonSet);
  const template = daemonSet.spec.template;
  const pod = template.spec;
  if (!subsetOf(daemonSet.spec.selector?.matchLabels, template.metadata?.labels)) {
    problem(where, "selector does not match the pod's labels");
  }
  if (pod.hostNetwork || pod.hostIPC || pod.hostPID) problem(where, "needs none of the host's namespaces");
  const imageUid = imageUser();
  const sc = pod.securityContext ?? {};
  if (sc.runAsUser !== imageUid || sc.runAsGroup !== imageUid || sc.runAsNonRoot !== true) {
    problem(where, `pod must run as the image's uid/gid ${imageUid}, non-root`);
  }
  const containers = pod.containers ?? [];
  const inits = pod.initContainers ?? [];
  if (containers.length !== 1 || containers[0].name !== "replica") {
    problem(where, "expected exactly one container 'replica'");
    return;
  }
  const replica = containers[0];
  const at = `${where} replica`;
  if ((replica.command ?? [])[0] !== "shmdict-replica") problem(at, "must run shmdict-replica");
  if (replica.securityContext?.runAsUser !== undefined && replica.securityContext.runAsUser !== imageUid) {
    problem(at, "runs as another uid than the one that owns the dict");
  }
  if (replica.securityContext?.allowPrivilegeEscalation !== false ||
      replica.securityContext?.readOnlyRootFilesystem !== true ||
      !(replica.securityContext?.capabilities?.drop ?? []).includes("ALL")) {
    problem(at, "must drop every capability, on a read-only root, without privilege escalation");
  }
  // The command line: --dict NAME with --etcd and --prefix, or --bridge and --source.
  const args = replica.args ?? [];
  if (!flagValue(args, "--dict")) problem(at, "needs --dict=NAME");
  const etcd = flagValue(args, "--etcd") !== undefined;
  const bridgeUpstream = flagValue(args, "--bridge") !== undefined;
  if (etcd === bridgeUpstream) problem(at, "needs exactly one upstream: --etcd or --bridge");
  if (etcd && !flagValue(args, "--prefix")) problem(at, "--etcd needs --prefix");
  if (bridgeUpstream && !flagValue(args, "--source")) problem(at, "--bridge needs --source");

  // /dev/shm: a hostPath directory (memory-backed: under /run, a tmpfs on systemd nodes).
  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
  const mountOf = (c, mountPath) => (c.volumeMounts ?? []).find((m) => m.mountPath === mountPath);
  const shm = volumes.get(mountOf(replica, "/dev/shm")?.name);
  if (!shm?.hostPath?.path?.startsWith("/run/")) {
    problem(at, "/dev/shm must be a hostPath directory under /run (tmpfs), shared with the node's pods");
  } else if (shm.hostPath.path !== "/run/shmdict") {
    problem(at, "the node's shmdict directory is /run/shmdict (README, daemonset.yaml)");
  }
  // Writes: a Unix socket in a hostPath directory the container mounts.
  const listen = flagValue(args, "--listen");
  const socketDir = listen?.startsWith("unix:") ? path.dirname(listen.slice(5)) : undefined;
  const socketVolume = volumes.get(mountOf(replica, socketDir)?.name);
  if (!socketVolume?.hostPath) {
    problem(at, "--listen must be unix:PATH in a mounted hostPath directory (no network listener)");
  } else if (socketVolume === shm) {
    problem(at, "the socket must not live among the dicts");
  }
  for (const c of [...containers, ...inits]) {
    for (const m of c.volumeMounts ?? []) {
      if (!volumes.has(m.name)) problem(`${where} ${c.name}`, `mounts missing volume ${m.name}`);
    }
  }
  // hostPath directories start root-owned: an init container hands each to the dict's uid.
  for (const volume of [shm, socketVolume].filter(Boolean)) {
    const owner = inits.find((c) => (c.volumeMounts ?? []).some((m) => m.name === volume.name));
    const mountPath = (owner?.volumeMounts ?? []).find((m) => m.name === volume.name)?.mountPath;
    const chown = (owner?.command ?? []).join(" ").match(new RegExp(`chown ${imageUid}:${imageUid}((?: [^ &;|]+)+)`));
    if (!chown || !chown[1].split(" ").includes(mountPath)) {
      problem(where, `no init container hands ${volume.hostPath.path} to uid ${imageUid}`);
    }
  }
  checkHealthProbes(at, replica);
  if (!(bytes(replica.resources?.limits?.memory) > 0)) {
    problem(at, "needs a memory limit: the dict's tmpfs pages are charged to it");
  }
}

function checkPod(deployment, service, policy) {
  const where = id(deployment);
  const template = deployment.spec.template;
  const pod = template.spec;
  const labels = template.metadata?.labels;
  if (!subsetOf(deployment.spec.selector?.matchLabels, labels)) {
    problem(where, "selector does not match the pod's labels");
  }
  if (service && !subsetOf(service.spec.selector, labels)) {
    problem(id(service), "selects no pod of the Deployment");
  }
  if (policy && !subsetOf(policy.spec.podSelector?.matchLabels, labels)) {
    problem(id(policy), "does not select the Deployment's pods");
  }
  if (policy && !(policy.spec.ingress ?? []).every((rule) => (rule.from ?? []).length > 0)) {
    problem(id(policy), "a rule admits every source");
  }

  const containers = pod.containers ?? [];
  const inits = pod.initContainers ?? [];
  const all = [...containers, ...inits];
  const named = (name) => all.filter((c) => c.name === name);
  for (const name of ["app", "bridge"]) {
    if (named(name).length !== 1) problem(where, `expected exactly one container '${name}'`);
  }
  const app = named("app")[0];
  const bridge = named("bridge")[0];
  if (!app || !bridge) return;

  // The same uid as the image, in the pod and in every container that overrides it.
  const imageUid = imageUser();
  const sc = pod.securityContext ?? {};
  if (sc.runAsUser !== imageUid || sc.runAsGroup !== imageUid || sc.fsGroup !== imageUid) {
    problem(where, `pod must run as the image's uid/gid/fsGroup ${imageUid}`);
  }
  for (const c of all) {
    if (c.securityContext?.runAsUser !== undefined && c.securityContext.runAsUser !== imageUid) {
      problem(`${where} ${c.name}`, "runs as another uid than the one that owns the dict");
    }
  }

  // One memory-backed emptyDir at /dev/shm in both, and the app's limit counting it.
  const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
  for (const c of all) {
    for (const m of c.volumeMounts ?? []) {
      if (!volumes.has(m.name)) problem(`${where} ${c.name}`, `mounts missing volume ${m.name}`);
    }
  }
  for (const name of volumes.keys()) {
    if (!all.some((c) => (c.volumeMounts ?? []).some((m) => m.name === name))) {
      problem(where, `volume ${name} is mounted by no container`);
    }
  }
  const shmVolume = (c) => (c.volumeMounts ?? []).find((m) => m.mountPath === "/dev/shm")?.name;
  const shared = shmVolume(app);
  if (!shared || shmVolume(bridge) !== shared) problem(where, "app and bridge do not share /dev/shm");
  const emptyDir = volumes.get(shared)?.emptyDir;
  if (emptyDir?.medium !== "Memory" || !emptyDir?.sizeLimit) {
    problem(where, `/dev/shm must be an emptyDir with medium Memory and a sizeLimit`);
  } else if (!(bytes(app.resources?.limits?.memory) > bytes(emptyDir.sizeLimit))) {
    problem(`${where} app`, "memory limit must exceed the emptyDir sizeLimit its pages are charged to");
  }

  // The bridge's own addresses, and the probes and Service pointing at them.
  const listen = flagValue(bridge.args, "--listen");
  const health = flagValue(bridge.args, "--health-listen");
  if (!listen) problem(`${where} bridge`, "needs --listen");
  checkHealthProbes(`${where} bridge`, bridge);
  const portNames = new Set((bridge.ports ?? []).map((p) => p.name));
  for (const p of service?.spec.ports ?? []) {
    if (!portNames.has(p.targetPort)) problem(id(service), `targetPort ${p.targetPort} is no bridge port`);
  }
  const grpcPort = (bridge.ports ?? []).find((p) => p.name === "grpc")?.containerPort;
  if (overlay !== "podman" && grpcPort !== Number(listen?.split(":").pop())) {
    problem(`${where} bridge`, "port 'grpc' is not the --listen port");
  }

  // Tokens and TLS come from the Secret's files.
  const secretMount = (bridge.volumeMounts ?? []).find((m) => volumes.get(m.name)?.secret);
  for (const flag of ["--token-file", "--tls-cert", "--tls-key"]) {
    const file = flagValue(bridge.args, flag);
    if (overlay === "podman") {
      if (file) problem(`${where} bridge`, `${flag}: podman 4.3 cannot mount Secrets`);
    } else if (!file || !secretMount || !file.startsWith(`${secretMount.mountPath}/`)) {
      problem(`${where} bridge`, `${flag} must name a file of the mounted Secret`);
    }
  }

  const isNativeSidecar = inits.includes(bridge) && bridge.restartPolicy === "Always";
  const readOnly = (bridge.args ?? []).includes("--read-only");
  if (isNativeSidecar !== (overlay === "native-sidecar")) {
    problem(`${where} bridge`, overlay === "native-sidecar" ? "is not a native sidecar" : "must be a regular container");
  }
  if (readOnly !== (overlay === "read-only-mirror")) {
    problem(`${where} bridge`, readOnly ? "is read-only outside the read-only overlay" : "lacks --read-only");
  }
  if (overlay === "podman") {
    if (all.some((c) => Object.values(c).some((p) => p?.grpc))) problem(where, "podman drops grpc probes");
    if ((pod.volumes ?? []).some((v) => v.secret)) problem(where, "podman crashes on secret volumes");
    if (all.some((c) => c.ports)) problem(where, "podman refuses ports with --network host");
    if (!/^127\.0\.0\.1:/.test(listen) || !/^127\.0\.0\.1:/.test(health)) {
      problem(`${where} bridge`, "on the host's network it must listen on loopback only");
    }
    if (all.some((c) => c.imagePullPolicy !== "Never")) problem(where, "no registry: imagePullPolicy Never");
  }
}

if (problems.length) {
  console.error(problems.map((p) => `${overlay}: ${p}`).join("\n"));
  process.exit(1);
}
console.log(`${overlay}: ${objects.map(id).join(", ")}: valid`);
