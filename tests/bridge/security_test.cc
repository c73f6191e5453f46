// The bridge's security: allow-list, --read-only, --max-value-bytes, tokens, TLS and mTLS, the
// health listener. Every refused call must return its code, change nothing, and leave the bridge
// serving.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <string>

#include "bridge_process.h"
#include "dict_test_base.h"
#include "shmdict/dict.h"
#include "shmdict/remote_dict.h"
#include "shmdict/v1/dict.grpc.pb.h"
#include "worker_process.h"

namespace shmdict::testing {
namespace {

using namespace std::chrono_literals;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

// A raw client of the bridge, sending `token` (if any) on every call.
class Client {
 public:
  explicit Client(
      const std::string& address,
      std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials(),
      std::string token = "")
      : stub_(v1::Dict::NewStub(grpc::CreateChannel(address, credentials))),
        token_(std::move(token)) {}

  std::unique_ptr<grpc::ClientContext> Context() const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() + 10s);
    if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
    return context;
  }

  grpc::Status Set(const std::string& dict, const std::string& key, const std::string& value) {
    v1::SetRequest request;
    request.set_dict(dict);
    request.set_key(key);
    request.mutable_value()->set_type(1);
    request.mutable_value()->set_data(value);
    v1::WriteResponse response;
    return stub_->Set(Context().get(), request, &response);
  }
  grpc::Status Get(const std::string& dict, const std::string& key) {
    v1::GetRequest request;
    request.set_dict(dict);
    request.set_key(key);
    v1::GetResponse response;
    return stub_->Get(Context().get(), request, &response);
  }
  grpc::Status Status(const std::string& dict) {
    v1::StatusRequest request;
    request.set_dict(dict);
    v1::StatusResponse response;
    return stub_->Status(Context().get(), request, &response);
  }
  grpc::Status ListDicts(std::vector<std::string>* names = nullptr) {
    v1::ListDictsResponse response;
    grpc::Status status = stub_->ListDicts(Context().get(), v1::ListDictsRequest(), &response);
    if (names != nullptr) names->assign(response.dicts().begin(), response.dicts().end());
    return status;
  }
  grpc::Status List(const std::string& dict) {
    v1::ListRequest request;
    request.set_dict(dict);
    auto context = Context();
    auto reader = stub_->List(context.get(), request);
    v1::ListResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  }
  // Opens a Watch of `dict`: OK once its first message arrived, else the stream's status.
  grpc::Status Watch(const std::string& dict) {
    auto context = Context();
    auto stream = stub_->Watch(context.get());
    v1::WatchRequest request;
    request.mutable_start()->set_dict(dict);
    request.mutable_start()->set_from_current(true);
    stream->Write(request);
    v1::WatchResponse response;
    if (stream->Read(&response)) {
      context->TryCancel();
      return grpc::Status::OK;
    }
    return stream->Finish();
  }
  // Every write RPC of the API, each of which the test expects to be refused.
  std::map<std::string, grpc::Status> EveryWrite(const std::string& dict) {
    std::map<std::string, grpc::Status> result;
    result["Set"] = Set(dict, "k", "v");
    {
      v1::DeleteRequest request;
      request.set_dict(dict);
      request.set_key("a");
      v1::DeleteResponse response;
      result["Delete"] = stub_->Delete(Context().get(), request, &response);
    }
    {
      v1::PopRequest request;
      request.set_dict(dict);
      request.set_key("a");
      v1::PopResponse response;
      result["Pop"] = stub_->Pop(Context().get(), request, &response);
    }
    {
      v1::PopItemRequest request;
      request.set_dict(dict);
      v1::PopResponse response;
      result["PopItem"] = stub_->PopItem(Context().get(), request, &response);
    }
    {
      v1::SetDefaultRequest request;
      request.set_dict(dict);
      request.set_key("new");
      request.mutable_default_value()->set_type(1);
      v1::SetDefaultResponse response;
      result["SetDefault"] = stub_->SetDefault(Context().get(), request, &response);
    }
    {
      v1::ClearRequest request;
      request.set_dict(dict);
      v1::WriteResponse response;
      result["Clear"] = stub_->Clear(Context().get(), request, &response);
    }
    {
      v1::BatchRequest request;
      request.set_dict(dict);
      v1::Mutation* mutation = request.add_mutations();
      mutation->set_op(v1::OP_SET);
      mutation->set_key("b");
      mutation->mutable_value()->set_type(1);
      v1::WriteResponse response;
      result["Batch"] = stub_->Batch(Context().get(), request, &response);
    }
    {
      v1::CompareAndSetRequest request;
      request.set_dict(dict);
      request.set_key("new");
      request.mutable_desired()->set_type(1);
      v1::CompareAndSetResponse response;
      result["CompareAndSet"] = stub_->CompareAndSet(Context().get(), request, &response);
    }
    {
      v1::IncrementRequest request;
      request.set_dict(dict);
      request.set_key("n");
      request.set_delta(1);
      v1::IncrementResponse response;
      result["Increment"] = stub_->Increment(Context().get(), request, &response);
    }
    return result;
  }
  // Every read RPC.
  std::map<std::string, grpc::Status> EveryRead(const std::string& dict) {
    return {{"Get", Get(dict, "a")},
            {"List", List(dict)},
            {"Status", Status(dict)},
            {"Watch", Watch(dict)}};
  }
  v1::Dict::Stub* stub() { return stub_.get(); }

 private:
  std::unique_ptr<v1::Dict::Stub> stub_;
  std::string token_;
};

void ExpectAll(const std::map<std::string, grpc::Status>& results, grpc::StatusCode code,
               const std::string& in_message = "") {
  for (const auto& [method, status] : results) {
    EXPECT_EQ(status.error_code(), code) << method << ": " << status.error_message();
    if (!in_message.empty()) {
      EXPECT_NE(status.error_message().find(in_message), std::string::npos)
          << method << ": " << status.error_message();
    }
  }
}

// A bridge on a Unix socket whose stderr (its log) is captured with its stdout, through sh.
struct LoggedBridge {
  LoggedBridge(const TempDir& dir, std::vector<std::string> args) {
    address = "unix:" + dir.path() + "/logged.sock";
    std::vector<std::string> argv = {
        "-c",   "exec \"$0\" \"$@\" 2>&1", BridgeProgram(), "--listen", address, "--log-level",
        "debug"};
    argv.insert(argv.end(), args.begin(), args.end());
    process = std::make_unique<WorkerProcess>("/bin/sh", argv);
  }
  bool AwaitReady() { return process->AwaitLine("ready", DeadlineIn(kWorkerTimeout)).has_value(); }
  // Waits for a log line containing `text`.
  bool AwaitLog(const std::string& text) {
    const Deadline deadline = DeadlineIn(kWorkerTimeout);
    std::string line;
    while (process->ReadLine(&line, deadline) == LineStatus::kLine) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  }
  std::string address;
  std::unique_ptr<WorkerProcess> process;
};

struct Ran {
  int code = -1;
  std::string out;
};

// Runs the shmdict CLI with `args` and `env` ("NAME=value" assignments); stderr joins stdout.
Ran RunCli(std::vector<std::string> args, const std::string& env = "") {
  std::vector<std::string> sh = {"-c", env + " exec \"$0\" \"$@\" 2>&1", SHMDICT_CLI_PATH};
  sh.insert(sh.end(), args.begin(), args.end());
  WorkerProcess process("/bin/sh", sh);
  process.CloseStdin();
  ExitInfo exit = process.Wait(DeadlineIn(kWorkerTimeout));
  return Ran{exit.exited ? exit.exit_code : -1, process.output()};
}

class SecurityTest : public DictTestBase {
 protected:
  void SetUp() override {
    auto dict = Dict::Open(CreateOptions(name_));
    ASSERT_OK(dict);
    local_.emplace(std::move(*dict));
    ASSERT_OK(local_->Set("a", Value::Str("1")));
    ASSERT_OK(local_->Set("n", Value::Int(5)));
  }

  // Starts a bridge on a Unix socket with `args`.
  BridgeProcess& StartBridge(std::vector<std::string> args, std::vector<std::string> listen = {}) {
    bridge_.emplace(std::move(listen), std::move(args));
    EXPECT_TRUE(bridge_->Start());
    return *bridge_;
  }

  std::optional<Dict> local_;
  TempDir dir_;
  std::optional<BridgeProcess> bridge_;
};

TEST_F(SecurityTest, ADictOutsideTheAllowListIsRefusedAndUnchanged) {
  const std::string other = NewDictName();
  auto other_dict = Dict::Open(CreateOptions(other));
  ASSERT_OK(other_dict);
  ASSERT_OK(other_dict->Set("a", Value::Str("1")));
  auto child = local_->OpenNested("child");
  ASSERT_OK(child);
  const auto before = other_dict->Export();
  StartBridge({"--dict", name_});
  Client client(bridge_->address());

  ExpectAll(client.EveryWrite(other), grpc::StatusCode::PERMISSION_DENIED, "'" + other + "'");
  ExpectAll(client.EveryRead(other), grpc::StatusCode::PERMISSION_DENIED, "'" + other + "'");
  EXPECT_EQ(other_dict->Export(), before);

  std::vector<std::string> names;
  ASSERT_TRUE(client.ListDicts(&names).ok());
  EXPECT_NE(std::find(names.begin(), names.end(), name_), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), other), names.end());

  // The allowed dict and its nested child are served.
  ExpectAll(client.EveryRead(name_), grpc::StatusCode::OK);
  EXPECT_TRUE(client.Set(name_, "k", "v").ok());
  EXPECT_TRUE(client.Set(child->name(), "k", "v").ok());
  EXPECT_EQ(*child->Get("k"), std::optional<Value>(Value::Str("v")));
}

TEST_F(SecurityTest, EveryWriteToAReadOnlyBridgeIsRefusedAndReadsStillWork) {
  StartBridge({"--read-only"});
  const auto before = local_->Export();
  Client client(bridge_->address());
  ExpectAll(client.EveryWrite(name_), grpc::StatusCode::PERMISSION_DENIED, "read-only");
  EXPECT_EQ(local_->Export(), before);
  ExpectAll(client.EveryRead(name_), grpc::StatusCode::OK);
}

TEST_F(SecurityTest, AKeyOrValueAboveMaxValueBytesIsRefusedBeforeAnythingIsWritten) {
  StartBridge({"--max-value-bytes", "100"});
  Client client(bridge_->address());
  const auto before = local_->Export();
  const uint64_t revision = local_->revision();
  const std::string big(101, 'x');

  EXPECT_EQ(client.Set(name_, "k", big).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(client.Set(name_, big, "v").error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  {
    v1::SetDefaultRequest request;
    request.set_dict(name_);
    request.set_key("new");
    request.mutable_default_value()->set_type(1);
    request.mutable_default_value()->set_data(big);
    v1::SetDefaultResponse response;
    EXPECT_EQ(client.stub()->SetDefault(client.Context().get(), request, &response).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  {
    // The first mutation is fine, the second too large: neither is applied.
    v1::BatchRequest request;
    request.set_dict(name_);
    for (const std::string& value : {std::string("small"), big}) {
      v1::Mutation* mutation = request.add_mutations();
      mutation->set_op(v1::OP_SET);
      mutation->set_key("b" + std::to_string(value.size()));
      mutation->mutable_value()->set_type(1);
      mutation->mutable_value()->set_data(value);
    }
    v1::WriteResponse response;
    grpc::Status status = client.stub()->Batch(client.Context().get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(status.error_message().find("mutation 1"), std::string::npos)
        << status.error_message();
  }
  {
    v1::CompareAndSetRequest request;
    request.set_dict(name_);
    request.set_key("a");
    request.mutable_expected()->set_type(1);
    request.mutable_expected()->set_data("1");
    request.mutable_desired()->set_type(1);
    request.mutable_desired()->set_data(big);
    v1::CompareAndSetResponse response;
    EXPECT_EQ(client.stub()->CompareAndSet(client.Context().get(), request, &response).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  EXPECT_EQ(local_->Export(), before);
  EXPECT_EQ(local_->revision(), revision);
  // At the limit: accepted.
  EXPECT_TRUE(client.Set(name_, "k", std::string(100, 'x')).ok());
}

constexpr char kTokens[] =
    "# tokens of the test\n"
    "rw-secret rw\n"
    "\n"
    "ro-secret   ro   # a reader\n";

TEST_F(SecurityTest, CallsWithoutAValidTokenAreUnauthenticatedAndReadOnlyTokensCannotWrite) {
  const std::string tokens = dir_.path() + "/tokens";
  WriteFile(tokens, kTokens);
  LoggedBridge bridge(dir_, {"--token-file", tokens});
  ASSERT_TRUE(bridge.AwaitReady());
  const auto before = local_->Export();

  for (const std::string token : {"", "wrong-secret", "rw-secre", "rw-secret-"}) {
    SCOPED_TRACE("token '" + token + "'");
    Client client(bridge.address, grpc::InsecureChannelCredentials(), token);
    ExpectAll(client.EveryWrite(name_), grpc::StatusCode::UNAUTHENTICATED);
    ExpectAll(client.EveryRead(name_), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(client.ListDicts().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  Client reader(bridge.address, grpc::InsecureChannelCredentials(), "ro-secret");
  ExpectAll(reader.EveryWrite(name_), grpc::StatusCode::PERMISSION_DENIED, "read-only");
  ExpectAll(reader.EveryRead(name_), grpc::StatusCode::OK);
  EXPECT_EQ(local_->Export(), before);

  Client writer(bridge.address, grpc::InsecureChannelCredentials(), "rw-secret");
  ExpectAll(writer.EveryRead(name_), grpc::StatusCode::OK);
  EXPECT_TRUE(writer.Set(name_, "k", "v").ok());
  EXPECT_EQ(*local_->Get("k"), std::optional<Value>(Value::Str("v")));
  // Refusals are logged, tokens never.
  bridge.process->Signal(SIGTERM);
  bridge.process->Wait(DeadlineIn(kWorkerTimeout));
  EXPECT_NE(bridge.process->output().find("refused"), std::string::npos);
  EXPECT_EQ(bridge.process->output().find("secret"), std::string::npos) << bridge.process->output();
}

TEST_F(SecurityTest, AMalformedTokenFileIsAStartupError) {
  const std::string tokens = dir_.path() + "/tokens";
  WriteFile(tokens, "good rw\nsecret-token rx\n");
  LoggedBridge bridge(dir_, {"--token-file", tokens});
  ExitInfo exit = bridge.process->Wait(DeadlineIn(kWorkerTimeout));
  const std::string& output = bridge.process->output();
  EXPECT_TRUE(exit.exited && exit.exit_code == 2) << output;
  EXPECT_NE(output.find("line 2"), std::string::npos) << output;
  EXPECT_EQ(output.find("secret-token"), std::string::npos) << output;
}

TEST_F(SecurityTest, SighupReloadsTheTokenFileAndABadFileKeepsTheOldTokens) {
  const std::string tokens = dir_.path() + "/tokens";
  WriteFile(tokens, "old-secret rw\n");
  LoggedBridge bridge(dir_, {"--token-file", tokens});
  ASSERT_TRUE(bridge.AwaitReady());
  Client old_client(bridge.address, grpc::InsecureChannelCredentials(), "old-secret");
  Client new_client(bridge.address, grpc::InsecureChannelCredentials(), "new-secret");
  EXPECT_TRUE(old_client.Get(name_, "a").ok());
  EXPECT_EQ(new_client.Get(name_, "a").error_code(), grpc::StatusCode::UNAUTHENTICATED);

  WriteFile(tokens, "new-secret rw\n");
  bridge.process->Signal(SIGHUP);
  ASSERT_TRUE(bridge.AwaitLog("tokens reloaded"));
  EXPECT_TRUE(new_client.Set(name_, "k", "v").ok());
  EXPECT_EQ(old_client.Get(name_, "a").error_code(), grpc::StatusCode::UNAUTHENTICATED);

  // A malformed file on reload: an error logged, the tokens in force stay.
  WriteFile(tokens, "new-secret\n");
  bridge.process->Signal(SIGHUP);
  ASSERT_TRUE(bridge.AwaitLog("tokens not reloaded"));
  EXPECT_TRUE(new_client.Get(name_, "a").ok());
  EXPECT_EQ(old_client.Get(name_, "a").error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// A tiny PKI made with openssl: ca (server.pem for 127.0.0.1, client.pem) and other-ca (rogue.pem,
// a client certificate the bridge's client CA never signed).
class Pki {
 public:
  explicit Pki(const std::string& dir) : dir_(dir) {
    const std::string script = R"(set -e
cd "$0"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
ca() { key "$1"; openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1"; }
leaf() {  # name ca extension
  key "$1"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1"
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" \
    -days 2 -extfile "$1.ext" 2>/dev/null
}
ca ca
ca other-ca
leaf server ca 'subjectAltName=IP:127.0.0.1'
leaf client ca 'extendedKeyUsage=clientAuth'
leaf rogue other-ca 'extendedKeyUsage=clientAuth'
)";
    WorkerProcess openssl("/bin/sh", {"-c", script, dir_});
    ExitInfo exit = openssl.Wait(DeadlineIn(kWorkerTimeout));
    EXPECT_TRUE(exit.Succeeded()) << "openssl failed: " << exit.ToString();
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string Read(const std::string& name) const {
    std::ifstream in(Path(name));
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  // TLS credentials trusting `ca`, presenting `client` (a name such as "client", or none).
  std::shared_ptr<grpc::ChannelCredentials> Credentials(const std::string& client = "",
                                                        const std::string& ca = "ca") const {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = Read(ca + ".pem");
    if (!client.empty()) {
      ssl.pem_cert_chain = Read(client + ".pem");
      ssl.pem_private_key = Read(client + ".key");
    }
    return grpc::SslCredentials(ssl);
  }
  std::vector<std::string> ServerArgs() const {
    return {"--tls-cert", Path("server.pem"), "--tls-key", Path("server.key")};
  }

 private:
  std::string dir_;
};

class TlsTest : public SecurityTest {
 protected:
  void SetUp() override {
    SecurityTest::SetUp();
    pki_.emplace(dir_.path());
    WriteFile(tokens_, kTokens);
  }
  BridgeProcess& StartTlsBridge(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = pki_->ServerArgs();
    args.insert(args.end(), extra.begin(), extra.end());
    return StartBridge(args, {"127.0.0.1:0"});
  }
  RemoteOptions Remote() const {
    RemoteOptions options{.address = bridge_->address(), .dict = name_, .mirror = true};
    options.tls_ca = pki_->Path("ca.pem");
    options.open_timeout = 5s;
    return options;
  }

  std::optional<Pki> pki_;
  const std::string tokens_ = dir_.path() + "/tokens";
};

TEST_F(TlsTest, TokensAreCheckedOverTlsToo) {
  StartTlsBridge({"--token-file", tokens_});
  const auto before = local_->Export();
  for (const std::string token : {"", "wrong-secret"}) {
    SCOPED_TRACE("token '" + token + "'");
    Client client(bridge_->address(), pki_->Credentials(), token);
    ExpectAll(client.EveryWrite(name_), grpc::StatusCode::UNAUTHENTICATED);
    ExpectAll(client.EveryRead(name_), grpc::StatusCode::UNAUTHENTICATED);
  }
  Client reader(bridge_->address(), pki_->Credentials(), "ro-secret");
  ExpectAll(reader.EveryWrite(name_), grpc::StatusCode::PERMISSION_DENIED, "read-only");
  ExpectAll(reader.EveryRead(name_), grpc::StatusCode::OK);
  EXPECT_EQ(local_->Export(), before);

  // RemoteDict: TLS and the token from its options, on every call and its mirror's Watch.
  RemoteOptions options = Remote();
  auto refused = RemoteDict::Open(options);
  ASSERT_THAT(refused, StatusIs(StatusCode::kPermissionDenied));
  options.token = "ro-secret";
  auto read_only = RemoteDict::Open(options);
  ASSERT_OK(read_only);
  EXPECT_EQ(*(*read_only)->Get("a"), std::optional<Value>(Value::Str("1")));
  EXPECT_EQ((*read_only)->Set("k", Value::Int(1)).status().code(), StatusCode::kPermissionDenied);
  options.token = "rw-secret";
  auto writer = RemoteDict::Open(options);
  ASSERT_OK(writer);
  ASSERT_OK((*writer)->Set("k", Value::Int(2)));
  EXPECT_EQ(*local_->Get("k"), std::optional<Value>(Value::Int(2)));
  // The read-only client's mirror (a Watch with its token) sees the write.
  ASSERT_OK((*read_only)->WaitForChange(local_->revision() - 1, 10s));
  EXPECT_EQ(*(*read_only)->Get("k"), std::optional<Value>(Value::Int(2)));
}

TEST_F(TlsTest, APlaintextClientOfATlsBridgeIsRefused) {
  StartTlsBridge();
  const auto before = local_->Export();
  Client plaintext(bridge_->address());
  ExpectAll(plaintext.EveryWrite(name_), grpc::StatusCode::UNAVAILABLE);
  ExpectAll(plaintext.EveryRead(name_), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(local_->Export(), before);
  // A client trusting another CA is refused too.
  Client distrustful(bridge_->address(), pki_->Credentials("", "other-ca"));
  EXPECT_EQ(distrustful.Set(name_, "k", "v").error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(local_->Export(), before);
  // The bridge still serves TLS clients.
  Client client(bridge_->address(), pki_->Credentials());
  ExpectAll(client.EveryRead(name_), grpc::StatusCode::OK);
  EXPECT_TRUE(client.Set(name_, "k", "v").ok());
}

TEST_F(TlsTest, UnderMtlsOnlyClientsWithACertificateOfTheClientCaAreServed) {
  StartTlsBridge({"--tls-client-ca", pki_->Path("ca.pem")});
  const auto before = local_->Export();
  for (const std::string certificate : {"", "rogue"}) {
    SCOPED_TRACE("client certificate '" + certificate + "'");
    Client client(bridge_->address(), pki_->Credentials(certificate));
    ExpectAll(client.EveryWrite(name_), grpc::StatusCode::UNAVAILABLE);
    ExpectAll(client.EveryRead(name_), grpc::StatusCode::UNAVAILABLE);
  }
  EXPECT_EQ(local_->Export(), before);
  Client client(bridge_->address(), pki_->Credentials("client"));
  ExpectAll(client.EveryRead(name_), grpc::StatusCode::OK);
  EXPECT_TRUE(client.Set(name_, "k", "v").ok());

  RemoteOptions options = Remote();
  options.tls_cert = pki_->Path("client.pem");
  options.tls_key = pki_->Path("client.key");
  auto remote = RemoteDict::Open(options);
  ASSERT_OK(remote);
  ASSERT_OK((*remote)->Set("k", Value::Str("w")));
  EXPECT_EQ(*local_->Get("k"), std::optional<Value>(Value::Str("w")));
  options.tls_key = pki_->Path("missing.key");
  EXPECT_EQ(RemoteDict::Open(options).status().code(), StatusCode::kInvalidArgument);
}

// grpc.health.v1.Health/Check by hand (no generated health stubs): serving status, or -1.
std::pair<grpc::StatusCode, int> CheckHealth(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::Slice slice(std::string(""));
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 10s);
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status status) { done.set_value(status); });
  grpc::Status status = done.get_future().get();
  if (!status.ok()) return {status.error_code(), 0};
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return {grpc::StatusCode::OK, bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : -1};
}

TEST_F(SecurityTest, TheHealthPortAnswersWithoutATokenWhileTheMainPortDemandsOne) {
  const std::string tokens = dir_.path() + "/tokens";
  WriteFile(tokens, kTokens);
  const std::string health = "unix:" + dir_.path() + "/health.sock";
  StartBridge({"--token-file", tokens, "--health-listen", health});
  EXPECT_EQ(CheckHealth(health), std::make_pair(grpc::StatusCode::OK, 1));
  Client anonymous(bridge_->address());
  EXPECT_EQ(anonymous.Get(name_, "a").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // The health port serves nothing else.
  Client through_health(health, grpc::InsecureChannelCredentials(), "rw-secret");
  EXPECT_EQ(through_health.Get(name_, "a").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  Client client(bridge_->address(), grpc::InsecureChannelCredentials(), "rw-secret");
  EXPECT_TRUE(client.Get(name_, "a").ok());
  // Both servers shut down on SIGTERM.
  EXPECT_TRUE(bridge_->Terminate().Succeeded());
}

TEST_F(SecurityTest, TheHealthCommandExitsByTheServingStatus) {
  if (std::string_view(SHMDICT_CLI_PATH).empty()) GTEST_SKIP() << "the CLI is not built";
  const std::string tokens = dir_.path() + "/tokens";
  WriteFile(tokens, kTokens);
  const std::string health = "unix:" + dir_.path() + "/health.sock";
  StartBridge({"--token-file", tokens, "--health-listen", health});
  Ran ran = RunCli({"health", "--remote", health});
  EXPECT_EQ(ran.code, 0) << ran.out;
  EXPECT_EQ(ran.out, "SERVING\n");
  ran = RunCli({"health", "--remote", health, "--service", "shmdict.v1.Dict"});
  EXPECT_EQ(ran.code, 0) << ran.out;
  ran = RunCli({"health", "--remote", health, "--service", "no.such.Service"});
  EXPECT_EQ(ran.code, 1) << ran.out;
  EXPECT_EQ(ran.out, "SERVICE_UNKNOWN\n");
  // The main port's health service needs no token either (only shmdict.v1.Dict does).
  EXPECT_EQ(RunCli({"health", "--remote", bridge_->address()}).code, 0);
  ran = RunCli({"health", "--remote", "unix:" + dir_.path() + "/nobody.sock"});
  EXPECT_EQ(ran.code, 2) << ran.out;
  EXPECT_NE(ran.out.find("UNAVAILABLE"), std::string::npos) << ran.out;
}

TEST_F(TlsTest, TheCliReachesAnMtlsBridgeWithItsTokenAndCertificate) {
  if (std::string_view(SHMDICT_CLI_PATH).empty()) GTEST_SKIP() << "the CLI is not built";
  StartTlsBridge({"--tls-client-ca", pki_->Path("ca.pem"), "--token-file", tokens_});
  const std::vector<std::string> tls = {
      "--remote",   bridge_->address(),       "--tls-ca",  pki_->Path("ca.pem"),
      "--tls-cert", pki_->Path("client.pem"), "--tls-key", pki_->Path("client.key")};
  auto with = [&](std::vector<std::string> args) {
    std::vector<std::string> all = tls;
    all.insert(all.end(), args.begin(), args.end());
    return all;
  };
  Ran ran = RunCli(with({"--token", "rw-secret", "set", name_, "k", "v"}));
  EXPECT_EQ(ran.code, 0) << ran.out;
  EXPECT_EQ(*local_->Get("k"), std::optional<Value>(Value::Str("v")));
  ran = RunCli(with({"get", name_, "k"}), "SHMDICT_TOKEN=ro-secret");
  EXPECT_EQ(ran.code, 0) << ran.out;
  EXPECT_EQ(ran.out, "v\n");
  ran = RunCli(with({"set", name_, "k", "w"}), "SHMDICT_TOKEN=ro-secret");
  EXPECT_EQ(ran.code, 2) << ran.out;
  EXPECT_NE(ran.out.find("PERMISSION_DENIED"), std::string::npos) << ran.out;
  ran = RunCli(with({"get", name_, "k"}));
  EXPECT_EQ(ran.code, 2) << ran.out;
  EXPECT_NE(ran.out.find("token"), std::string::npos) << ran.out;
  EXPECT_EQ(*local_->Get("k"), std::optional<Value>(Value::Str("v")));
  ran = RunCli(with({"health"}));
  EXPECT_EQ(ran.code, 0) << ran.out;
}

}  // namespace
}  // namespace shmdict::testing
