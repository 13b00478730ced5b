// Command gen writes the test vectors of the ktrail-protocols crate.
//
// Every vector is produced by real Go code: Kubernetes objects by the
// apimachinery serializers that kube-apiserver uses, HTTP/1.1 and HTTP/2 by
// net/http, gRPC by grpc-go talking to a real etcd and a real containerd.
// Connection traffic is recorded by a relay that sits between the real client
// and the real server and writes down every read() it does, as the agent sees
// every read/write: one line per chunk, "<dir> <len> <hex>", dir '>' for
// client to server and '<' for server to client.
//
// Usage: gen k8s|http|etcd|cri|cri-run|apiserver OUTDIR   (see ../vectors/README.md)
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: gen k8s|http|etcd|cri|cri-run|apiserver OUTDIR")
	}
	out := os.Args[2]
	if err := os.MkdirAll(out, 0o755); err != nil {
		log.Fatal(err)
	}
	switch os.Args[1] {
	case "k8s":
		genK8s(out)
	case "http":
		genHTTP(out)
	case "etcd":
		genEtcd(out)
	case "cri":
		genCRI(out)
	case "cri-run":
		genCRIRun(out)
	case "apiserver":
		genAPIServer(out)
	default:
		log.Fatalf("unknown vector set %q", os.Args[1])
	}
}

// ---------------------------------------------------------------- recording relay

type relay struct {
	// tlsUp: terminate TLS from the client and open TLS to the upstream
	// (same ALPN protocol), recording the plaintext in between.
	tlsUp  bool
	ln     net.Listener
	upNet  string
	upAddr string
	name   string
	dir    string
	mu     sync.Mutex
	nconns int
	wg     sync.WaitGroup
}

func newRelay(netw, listenAddr, upNet, upAddr, dir, name string) *relay {
	return startRelay(false, netw, listenAddr, upNet, upAddr, dir, name)
}

func startRelay(tlsUp bool, netw, listenAddr, upNet, upAddr, dir, name string) *relay {
	ln, err := net.Listen(netw, listenAddr)
	if err != nil {
		log.Fatal(err)
	}
	r := &relay{tlsUp: tlsUp, ln: ln, upNet: upNet, upAddr: upAddr, dir: dir, name: name}
	go r.serve()
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.nconns++
		n := r.nconns
		r.mu.Unlock()
		r.wg.Add(1)
		go r.handle(c, n)
	}
}

func (r *relay) handle(c net.Conn, n int) {
	defer r.wg.Done()
	var up net.Conn
	var err error
	if r.tlsUp {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{selfSigned()}, NextProtos: []string{"h2", "http/1.1"}})
		if err := tc.Handshake(); err != nil {
			log.Printf("relay tls: %v", err)
			c.Close()
			return
		}
		c = tc
		alpn := tc.ConnectionState().NegotiatedProtocol
		cfg := &tls.Config{InsecureSkipVerify: true}
		if alpn != "" {
			cfg.NextProtos = []string{alpn}
		}
		up, err = tls.Dial(r.upNet, r.upAddr, cfg)
	} else {
		up, err = net.Dial(r.upNet, r.upAddr)
	}
	if err != nil {
		log.Printf("relay dial: %v", err)
		c.Close()
		return
	}
	name := r.name
	if n > 1 {
		name = fmt.Sprintf("%s-conn%d", r.name, n)
	}
	f, err := os.Create(filepath.Join(r.dir, name+".txt"))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "# %s: recorded by protocols/tests/gen (relay read chunks; '>' client to server, '<' server to client)\n", name)
	var mu sync.Mutex
	pump := func(dst, src net.Conn, dir byte, done chan struct{}) {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				mu.Lock()
				fmt.Fprintf(f, "%c %d %x\n", dir, k, buf[:k])
				mu.Unlock()
				if _, werr := dst.Write(buf[:k]); werr != nil {
					return
				}
			}
			if err != nil {
				if tc, ok := dst.(interface{ CloseWrite() error }); ok {
					tc.CloseWrite()
				} else {
					dst.Close()
				}
				return
			}
		}
	}
	d1, d2 := make(chan struct{}), make(chan struct{})
	go pump(up, c, '>', d1)
	go pump(c, up, '<', d2)
	<-d1
	<-d2
	c.Close()
	up.Close()
}

func (r *relay) close() {
	r.ln.Close()
	r.wg.Wait()
}

// ---------------------------------------------------------------- Kubernetes objects

var (
	scheme    = runtime.NewScheme()
	jsonSer   *json.Serializer
	protoSer  *protobuf.Serializer
	rawProto  *protobuf.RawSerializer
	podUID    = types.UID("6f1c9f9e-2b7e-4c3a-9d55-0c8f5f2a1b11")
	podName   = "mynginx-trace-test"
	namespace = "default"
)

func init() {
	if err := corev1.AddToScheme(scheme); err != nil {
		log.Fatal(err)
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	jsonSer = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{})
	protoSer = protobuf.NewSerializer(scheme, scheme)
	rawProto = protobuf.NewRawSerializer(scheme, scheme)
}

func pod(rv string, nodeName string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name: podName, Namespace: namespace, UID: podUID, ResourceVersion: rv,
			Labels:            map[string]string{"run": podName},
			CreationTimestamp: metav1.Date(2026, 11, 22, 21, 0, 0, 0, time.UTC),
		},
		Spec: corev1.PodSpec{
			Containers:    []corev1.Container{{Name: podName, Image: "nginx", ImagePullPolicy: corev1.PullAlways}},
			RestartPolicy: corev1.RestartPolicyAlways, DNSPolicy: corev1.DNSClusterFirst,
			NodeName: nodeName, SchedulerName: "default-scheduler",
		},
		Status: corev1.PodStatus{Phase: phase, QOSClass: corev1.PodQOSBestEffort},
	}
}

func encode(enc runtime.Encoder, obj runtime.Object) []byte {
	var b bytes.Buffer
	if err := enc.Encode(obj, &b); err != nil {
		log.Fatal(err)
	}
	return b.Bytes()
}

func encJSON(obj runtime.Object) []byte  { return encode(jsonSer, obj) }
func encProto(obj runtime.Object) []byte { return encode(protoSer, obj) }

func binding() *corev1.Binding {
	return &corev1.Binding{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Binding"},
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: namespace, UID: podUID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: "ktrail-worker"},
	}
}

const pemKey = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAvectorvectorvectorvectorvectorvectorvector0123456789\n-----END RSA PRIVATE KEY-----\n"

func secret() *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "db-credentials", Namespace: namespace, UID: "0b7d2c1e-1111-4a4a-8c8c-222233334444", ResourceVersion: "777",
			Annotations: map[string]string{
				"kubectl.kubernetes.io/last-applied-configuration": `{"apiVersion":"v1","data":{"password":"aHVudGVyMg=="},"kind":"Secret","metadata":{"name":"db-credentials","namespace":"default"}}`,
			},
		},
		Data:       map[string][]byte{"password": []byte("hunter2"), "tls.key": []byte(pemKey)},
		StringData: map[string]string{"username": "admin"},
		Type:       corev1.SecretTypeOpaque,
	}
}

func status201() *metav1.Status {
	return &metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: metav1.StatusSuccess, Code: 201}
}

func watchJSON(typ string, obj runtime.Object) []byte {
	ev := &metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: bytes.TrimSpace(encJSON(obj))}}
	return encode(jsonSer, ev)
}

func watchProto(typ string, obj runtime.Object) []byte {
	ev := &metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: encProto(obj)}}
	var b bytes.Buffer
	w := protobuf.LengthDelimitedFramer.NewFrameWriter(&b)
	if _, err := w.Write(encode(rawProto, ev)); err != nil {
		log.Fatal(err)
	}
	return b.Bytes()
}

func write(dir, name string, b []byte) {
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		log.Fatal(err)
	}
}

func genK8s(out string) {
	write(out, "pod-pending.json", encJSON(pod("1234", "", corev1.PodPending)))
	write(out, "pod-running.json", encJSON(pod("1240", "ktrail-worker", corev1.PodRunning)))
	write(out, "pod-bound.pb", encProto(pod("1235", "ktrail-worker", corev1.PodPending)))
	write(out, "binding.pb", encProto(binding()))
	write(out, "binding.json", encJSON(binding()))
	write(out, "status-201.pb", encProto(status201()))
	write(out, "secret.json", encJSON(secret()))
	write(out, "secret.pb", encProto(secret()))
	list := &corev1.PodList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PodList"}, ListMeta: metav1.ListMeta{ResourceVersion: "1300"},
		Items: []corev1.Pod{*pod("1234", "", corev1.PodPending), *pod("1240", "ktrail-worker", corev1.PodRunning)}}
	write(out, "podlist.json", encJSON(list))
	// kube-apiserver gzips large responses (level 1) when the client accepts it.
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, 1)
	if err != nil {
		log.Fatal(err)
	}
	zw.Write(encJSON(list))
	zw.Close()
	write(out, "podlist.json.gz", gz.Bytes())
	var w bytes.Buffer
	w.Write(watchJSON("ADDED", pod("1234", "", corev1.PodPending)))
	w.Write(watchJSON("MODIFIED", pod("1235", "ktrail-worker", corev1.PodPending)))
	write(out, "watch-pods.jsonl", w.Bytes())
	w.Reset()
	w.Write(watchProto("ADDED", pod("1234", "", corev1.PodPending)))
	w.Write(watchProto("MODIFIED", pod("1235", "ktrail-worker", corev1.PodPending)))
	write(out, "watch-pods.pb", w.Bytes())
}

// ---------------------------------------------------------------- HTTP/1.1 and HTTP/2 (h2c)

const bearer = "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6InZlY3RvciJ9.c2VjcmV0LXRva2VuLWJvZHk.c2lnbmF0dXJl"

func apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/namespaces/default/pods", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Audit-Id", "a1b2c3d4-0000-4000-8000-000000000001")
		w.WriteHeader(http.StatusCreated)
		w.Write(encJSON(pod("1234", "", corev1.PodPending)))
	})
	mux.HandleFunc("POST /api/v1/namespaces/default/pods/{name}/binding", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf")
		w.WriteHeader(http.StatusCreated)
		w.Write(encProto(status201()))
	})
	mux.HandleFunc("PATCH /api/v1/namespaces/default/pods/{name}/status", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(encJSON(pod("1240", "ktrail-worker", corev1.PodRunning)))
	})
	mux.HandleFunc("GET /api/v1/namespaces/default/secrets/db-credentials", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Set-Cookie", "session=abcdef0123456789; HttpOnly")
		w.Write(encJSON(secret()))
	})
	mux.HandleFunc("GET /api/v1/namespaces/default/pods/missing", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"missing\" not found","reason":"NotFound","details":{"name":"missing","kind":"pods"},"code":404}` + "\n"))
	})
	mux.HandleFunc("GET /api/v1/namespaces/default/pods", func(w http.ResponseWriter, r *http.Request) {
		fl := w.(http.Flusher)
		if r.Header.Get("Accept") == "application/vnd.kubernetes.protobuf;type=watch" {
			w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf;stream=watch")
			w.WriteHeader(200)
			fl.Flush()
			w.Write(watchProto("ADDED", pod("1234", "", corev1.PodPending)))
			fl.Flush()
			time.Sleep(20 * time.Millisecond)
			w.Write(watchProto("MODIFIED", pod("1235", "ktrail-worker", corev1.PodPending)))
			fl.Flush()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(200)
		fl.Flush()
		w.Write(watchJSON("ADDED", pod("1234", "", corev1.PodPending)))
		fl.Flush()
		time.Sleep(20 * time.Millisecond)
		w.Write(watchJSON("MODIFIED", pod("1235", "ktrail-worker", corev1.PodPending)))
		fl.Flush()
	})
	return mux
}

func runClient(base string, c *http.Client) {
	do := func(method, path, ctype, accept string, body []byte) {
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		if err != nil {
			log.Fatal(err)
		}
		req.Header.Set("User-Agent", "kubectl/v1.34.4 (linux/amd64) kubernetes/e2d0fb4")
		req.Header.Set("Authorization", bearer)
		req.Header.Set("Accept", accept)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := c.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	do("POST", "/api/v1/namespaces/default/pods?fieldManager=kubectl-run", "application/json", "application/json", encJSON(pod("", "", "")))
	do("GET", "/api/v1/namespaces/default/pods?fieldSelector=metadata.name%3Dmynginx-trace-test&resourceVersion=1234&watch=true", "", "application/json", nil)
	do("POST", "/api/v1/namespaces/default/pods/mynginx-trace-test/binding", "application/vnd.kubernetes.protobuf", "application/vnd.kubernetes.protobuf, */*", encProto(binding()))
	do("GET", "/api/v1/namespaces/default/pods?resourceVersion=1234&watch=true", "", "application/vnd.kubernetes.protobuf;type=watch", nil)
	do("PATCH", "/api/v1/namespaces/default/pods/mynginx-trace-test/status", "application/strategic-merge-patch+json", "application/json",
		[]byte(`{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}`))
	do("GET", "/api/v1/namespaces/default/secrets/db-credentials", "", "application/json", nil)
	do("GET", "/api/v1/namespaces/default/pods/missing", "", "application/json", nil)
}

func genHTTP(out string) {
	for _, v := range []struct {
		name string
		h2   bool
	}{{"http1-kubectl", false}, {"h2c-kubectl", true}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			log.Fatal(err)
		}
		srv := &http.Server{Handler: apiHandler(), Protocols: new(http.Protocols)}
		tr := &http.Transport{Protocols: new(http.Protocols), DisableCompression: true}
		if v.h2 {
			srv.Protocols.SetUnencryptedHTTP2(true)
			tr.Protocols.SetUnencryptedHTTP2(true)
		} else {
			srv.Protocols.SetHTTP1(true)
			tr.Protocols.SetHTTP1(true)
		}
		go srv.Serve(ln)
		r := newRelay("tcp", "127.0.0.1:0", "tcp", ln.Addr().String(), out, v.name)
		c := &http.Client{Transport: tr}
		runClient("http://"+r.addr(), c)
		tr.CloseIdleConnections()
		time.Sleep(100 * time.Millisecond)
		srv.Close()
		r.close()
	}
}

// ---------------------------------------------------------------- etcd v3 (real etcd server)

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func genEtcd(out string) {
	etcd := os.Getenv("ETCD")
	if etcd == "" {
		etcd = "/var/cache/ktrail/etcd-v3.6.16/bin/etcd"
	}
	data, err := os.MkdirTemp("", "ktrail-gen-etcd")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(data)
	cp, pp := freePort(), freePort()
	curl := fmt.Sprintf("http://127.0.0.1:%d", cp)
	purl := fmt.Sprintf("http://127.0.0.1:%d", pp)
	cmd := exec.Command("nice", "-n", "19", etcd, "--name", "gen", "--data-dir", data,
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		"--initial-cluster", "gen="+purl, "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", cp))
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			log.Fatal("etcd did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := newRelay("tcp", "127.0.0.1:0", "tcp", fmt.Sprintf("127.0.0.1:%d", cp), out, "etcd-apiserver")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{r.addr()}, DialTimeout: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := "/registry/pods/default/" + podName
	// What kube-apiserver's etcd3 store does: watch the prefix, create with a
	// Txn guarded by mod_revision == 0, read, update with a Txn guarded by the
	// read revision, list with a prefix Range, delete.
	wctx, wcancel := context.WithCancel(ctx)
	wch := cli.Watch(wctx, "/registry/pods/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	time.Sleep(200 * time.Millisecond)
	tx, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(encProto(pod("", "", corev1.PodPending))))).Commit()
	if err != nil {
		log.Fatal(err)
	}
	got, err := cli.Get(ctx, key)
	if err != nil {
		log.Fatal(err)
	}
	rev := got.Kvs[0].ModRevision
	_, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(encProto(pod("", "ktrail-worker", corev1.PodPending))))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		log.Fatal(err)
	}
	// A conflicting update: the compare fails and the Else branch reads.
	_, err = cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", tx.Header.Revision-1)).
		Then(clientv3.OpPut(key, "x")).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		log.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/registry/events/default/"+podName+".1", "scheduled"); err != nil {
		log.Fatal(err)
	}
	if _, err := cli.Get(ctx, "/registry/pods/default/", clientv3.WithPrefix(), clientv3.WithLimit(500)); err != nil {
		log.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-wch:
		case <-time.After(5 * time.Second):
		}
	}
	if _, err := cli.Delete(ctx, key); err != nil {
		log.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	wcancel()
	time.Sleep(200 * time.Millisecond)
	cli.Close()
	r.close()
}

// ---------------------------------------------------------------- CRI (real containerd)

func genCRI(out string) {
	sock := os.Getenv("CRI_SOCKET")
	if sock == "" {
		log.Fatal("CRI_SOCKET: path of a containerd socket")
	}
	r := newRelay("unix", filepath.Join(os.TempDir(), fmt.Sprintf("ktrail-gen-cri-%d.sock", os.Getpid())), "unix", sock, out, "cri-kubelet")
	conn, err := grpc.NewClient("unix://"+r.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	rt := cri.NewRuntimeServiceClient(conn)
	img := cri.NewImageServiceClient(conn)
	call := func(what string, f func(ctx context.Context) error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		log.Printf("%s: %v", what, f(ctx))
	}
	call("Version", func(ctx context.Context) error {
		_, err := rt.Version(ctx, &cri.VersionRequest{Version: "v1"})
		return err
	})
	meta := &cri.PodSandboxMetadata{Name: podName, Namespace: namespace, Uid: string(podUID), Attempt: 0}
	sbCfg := &cri.PodSandboxConfig{
		Metadata: meta, Hostname: podName, LogDirectory: "/var/log/pods/default_" + podName + "_" + string(podUID),
		Labels:    map[string]string{"io.kubernetes.pod.name": podName, "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": string(podUID), "run": podName},
		Linux:     &cri.LinuxPodSandboxConfig{CgroupParent: "/kubepods/besteffort/pod" + string(podUID)},
		DnsConfig: &cri.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local"}},
	}
	var sandboxID string
	call("RunPodSandbox", func(ctx context.Context) error {
		resp, err := rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: sbCfg})
		if err == nil {
			sandboxID = resp.PodSandboxId
		}
		return err
	})
	if sandboxID == "" {
		sandboxID = "4c1d3f0a5b6e7d8c9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6"
	}
	call("ImageStatus", func(ctx context.Context) error {
		_, err := img.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: "docker.io/library/nginx:latest"}})
		return err
	})
	call("PullImage", func(ctx context.Context) error {
		_, err := img.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: "docker.io/library/nginx:latest"}, SandboxConfig: sbCfg})
		return err
	})
	var ctrID string
	call("CreateContainer", func(ctx context.Context) error {
		resp, err := rt.CreateContainer(ctx, &cri.CreateContainerRequest{
			PodSandboxId: sandboxID,
			Config: &cri.ContainerConfig{
				Metadata: &cri.ContainerMetadata{Name: podName, Attempt: 0},
				Image:    &cri.ImageSpec{Image: "docker.io/library/nginx:latest"},
				LogPath:  podName + "/0.log",
				Envs:     []*cri.KeyValue{{Key: "KUBERNETES_SERVICE_HOST", Value: "10.96.0.1"}},
			},
			SandboxConfig: sbCfg,
		})
		if err == nil {
			ctrID = resp.ContainerId
		}
		return err
	})
	if ctrID == "" {
		ctrID = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
	}
	call("StartContainer", func(ctx context.Context) error {
		_, err := rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: ctrID})
		return err
	})
	call("ListPodSandbox", func(ctx context.Context) error {
		_, err := rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
		return err
	})
	call("StopPodSandbox", func(ctx context.Context) error {
		_, err := rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: sandboxID})
		return err
	})
	call("RemovePodSandbox", func(ctx context.Context) error {
		_, err := rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: sandboxID})
		return err
	})
	conn.Close()
	time.Sleep(200 * time.Millisecond)
	r.close()
	os.Remove(r.addr())
}

// genCRIRun records what the kubelet does for `kubectl run` when everything
// works: the image is pulled from a registry, the sandbox and the container
// run (host network, so no CNI is needed; the container sleeps instead of
// serving on port 80 of the host), then everything is stopped and removed.
func genCRIRun(out string) {
	sock := os.Getenv("CRI_SOCKET")
	image := os.Getenv("CRI_IMAGE")
	if sock == "" || image == "" {
		log.Fatal("CRI_SOCKET: a containerd socket; CRI_IMAGE: an image it can pull")
	}
	r := newRelay("unix", filepath.Join(os.TempDir(), fmt.Sprintf("ktrail-gen-cri-%d.sock", os.Getpid())), "unix", sock, out, "cri-kubelet-run")
	conn, err := grpc.NewClient("unix://"+r.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	rt := cri.NewRuntimeServiceClient(conn)
	img := cri.NewImageServiceClient(conn)
	must := func(what string, err error) {
		if err != nil {
			log.Fatalf("%s: %v", what, err)
		}
		log.Printf("%s: ok", what)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	meta := &cri.PodSandboxMetadata{Name: podName, Namespace: namespace, Uid: string(podUID), Attempt: 0}
	sbCfg := &cri.PodSandboxConfig{
		Metadata: meta, LogDirectory: "/tmp/ktrail-cri/pods/default_" + podName + "_" + string(podUID),
		Labels: map[string]string{"io.kubernetes.pod.name": podName, "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": string(podUID), "run": podName},
		Linux: &cri.LinuxPodSandboxConfig{
			CgroupParent:    "/ktrail-gen/pod" + string(podUID),
			SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}},
		},
	}
	_, err = img.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: image}})
	must("ImageStatus", err)
	pulled, err := img.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: image}, SandboxConfig: sbCfg})
	must("PullImage", err)
	_, err = img.ImageStatus(ctx, &cri.ImageStatusRequest{Image: &cri.ImageSpec{Image: image}})
	must("ImageStatus", err)
	sb, err := rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: sbCfg})
	must("RunPodSandbox", err)
	ctr, err := rt.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: sb.PodSandboxId,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: podName, Attempt: 0},
			Image:    &cri.ImageSpec{Image: pulled.ImageRef},
			Command:  []string{"/bin/sleep", "30"},
			LogPath:  podName + "/0.log",
			Envs:     []*cri.KeyValue{{Key: "KUBERNETES_SERVICE_HOST", Value: "10.96.0.1"}},
		},
		SandboxConfig: sbCfg,
	})
	must("CreateContainer", err)
	_, err = rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: ctr.ContainerId})
	must("StartContainer", err)
	_, err = rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: ctr.ContainerId})
	must("ContainerStatus", err)
	_, err = rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: ctr.ContainerId, Timeout: 1})
	must("StopContainer", err)
	_, err = rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: ctr.ContainerId})
	must("RemoveContainer", err)
	_, err = rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId})
	must("StopPodSandbox", err)
	_, err = rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId})
	must("RemovePodSandbox", err)
	conn.Close()
	time.Sleep(200 * time.Millisecond)
	r.close()
	os.Remove(r.addr())
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ktrail-gen relay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func startEtcd(data string) (addr string, stop func()) {
	etcd := os.Getenv("ETCD")
	if etcd == "" {
		etcd = "/var/cache/ktrail/etcd-v3.6.16/bin/etcd"
	}
	cp, pp := freePort(), freePort()
	curl := fmt.Sprintf("http://127.0.0.1:%d", cp)
	purl := fmt.Sprintf("http://127.0.0.1:%d", pp)
	cmd := exec.Command("nice", "-n", "19", etcd, "--name", "gen", "--data-dir", data,
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		"--initial-cluster", "gen="+purl, "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", cp)
	waitPort(addr, 10*time.Second)
	return addr, func() { cmd.Process.Kill(); cmd.Wait() }
}

func waitPort(addr string, d time.Duration) {
	end := time.Now().Add(d)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			log.Fatalf("%s did not open", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const apiToken = "ktrail-gen-token-0123456789abcdef"

// genAPIServer records the reference flow of `kubectl run` against a real
// kube-apiserver (v1.34.4, /var/cache/ktrail/kubernetes-v1.34.4, built by
// cluster/build.sh) on a real etcd: kubectl's requests (through a relay that
// terminates TLS and records the plaintext, as the agent's Go TLS uprobes
// see it), kube-scheduler's watch and binding, a status PATCH like the
// kubelet's, a watching `kubectl get -w`, and kube-apiserver's own etcd
// traffic (plain gRPC through a relay).
func genAPIServer(out string) {
	bin := os.Getenv("K8S_BIN")
	if bin == "" {
		bin = "/var/cache/ktrail/kubernetes-v1.34.4/bin"
	}
	tmp, err := os.MkdirTemp("", "ktrail-gen-apiserver")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	etcdAddr, stopEtcd := startEtcd(filepath.Join(tmp, "etcd"))
	defer stopEtcd()
	er := newRelay("tcp", "127.0.0.1:0", "tcp", etcdAddr, out, "apiserver-etcd")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		log.Fatal(err)
	}
	os.WriteFile(filepath.Join(tmp, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	os.WriteFile(filepath.Join(tmp, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	os.WriteFile(filepath.Join(tmp, "tokens.csv"), []byte(apiToken+",admin,admin-uid,system:masters\n"), 0o600)
	port := freePort()
	api := exec.Command("nice", "-n", "19", filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers=http://"+er.addr(), "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port), "--cert-dir="+filepath.Join(tmp, "certs"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(tmp, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(tmp, "sa.key"),
		"--token-auth-file="+filepath.Join(tmp, "tokens.csv"), "--authorization-mode=AlwaysAllow",
		"--service-cluster-ip-range=10.96.0.0/16", "--disable-admission-plugins=ServiceAccount",
		"--enable-priority-and-fairness=false", "--v=0")
	apiLog, _ := os.Create(filepath.Join(tmp, "apiserver.log"))
	api.Stdout, api.Stderr = apiLog, apiLog
	if err := api.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { api.Process.Kill(); api.Wait() }()
	upstream := fmt.Sprintf("127.0.0.1:%d", port)
	direct := kubeconfig(tmp, "direct", upstream)
	ready := false
	for i := 0; i < 240 && !ready; i++ {
		time.Sleep(500 * time.Millisecond)
		o, err := exec.Command("kubectl", "--kubeconfig", direct, "get", "--raw", "/readyz").CombinedOutput()
		ready = err == nil && strings.TrimSpace(string(o)) == "ok"
	}
	if !ready {
		b, _ := os.ReadFile(filepath.Join(tmp, "apiserver.log"))
		log.Fatalf("kube-apiserver not ready:\n%s", b[max(0, len(b)-3000):])
	}
	kc := func(args ...string) string {
		o, err := exec.Command("kubectl", append([]string{"--kubeconfig", direct}, args...)...).CombinedOutput()
		if err != nil {
			log.Fatalf("kubectl %v: %v\n%s", args, err, o)
		}
		return string(o)
	}
	// A node for the scheduler (no kubelet: its status is written here).
	nodeFile := filepath.Join(tmp, "node.json")
	os.WriteFile(nodeFile, []byte(`{"apiVersion":"v1","kind":"Node","metadata":{"name":"ktrail-worker","labels":{"kubernetes.io/hostname":"ktrail-worker"}}}`), 0o644)
	kc("create", "-f", nodeFile)
	kc("patch", "node", "ktrail-worker", "--subresource=status", "--type=merge", "-p",
		`{"status":{"capacity":{"cpu":"4","memory":"8Gi","pods":"110"},"allocatable":{"cpu":"4","memory":"8Gi","pods":"110"},"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"ready","lastHeartbeatTime":"2026-11-22T21:00:00Z","lastTransitionTime":"2026-11-22T21:00:00Z"}]}}`)
	// The TaintNodesByCondition admission taints a new node not-ready; no
	// kubelet or node controller will lift it here.
	if o, err := exec.Command("kubectl", "--kubeconfig", direct, "taint", "nodes", "ktrail-worker", "node.kubernetes.io/not-ready:NoSchedule-").CombinedOutput(); err != nil {
		log.Printf("untaint: %v %s", err, o)
	}
	for i := 0; i < 100; i++ {
		if _, err := exec.Command("kubectl", "--kubeconfig", direct, "get", "serviceaccount", "default").CombinedOutput(); err == nil {
			break
		}
		if strings.Contains(kc("get", "ns", "default", "-o", "name"), "default") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	via := func(name string) (string, *relay) {
		r := startRelay(true, "tcp", "127.0.0.1:0", "tcp", upstream, out, name)
		return kubeconfig(tmp, name, r.addr()), r
	}
	// A watcher, like `kubectl get pods -w` in another terminal (hop 12).
	wk, wr := via("kubectl-get-watch")
	watch := exec.Command("kubectl", "--kubeconfig", wk, "get", "pods", "-w")
	watch.Stdout, watch.Stderr = os.Stderr, os.Stderr
	if err := watch.Start(); err != nil {
		log.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	// Hop 1: kubectl run.
	rk, rr := via("kubectl-run")
	o, err := exec.Command("kubectl", "--kubeconfig", rk, "run", podName, "--image=nginx").CombinedOutput()
	log.Printf("kubectl run: %v %s", err, o)
	rr.close()
	// Hops 3-4: the scheduler watches, binds, and posts an event.
	sk, sr := via("kube-scheduler")
	sched := exec.Command("nice", "-n", "19", filepath.Join(bin, "kube-scheduler"), "--kubeconfig", sk,
		"--authentication-kubeconfig", sk, "--authorization-kubeconfig", sk,
		"--leader-elect=false", "--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", freePort()), "--v=1")
	schedLog, _ := os.Create(filepath.Join(tmp, "scheduler.log"))
	sched.Stdout, sched.Stderr = schedLog, schedLog
	if err := sched.Start(); err != nil {
		log.Fatal(err)
	}
	bound := false
	for i := 0; i < 240 && !bound; i++ {
		time.Sleep(500 * time.Millisecond)
		bound = strings.TrimSpace(kc("get", "pod", podName, "-o", "jsonpath={.spec.nodeName}")) == "ktrail-worker"
	}
	time.Sleep(2 * time.Second)
	sched.Process.Kill()
	sched.Wait()
	if !bound {
		b, _ := os.ReadFile(filepath.Join(tmp, "scheduler.log"))
		log.Printf("pod not bound; scheduler log:\n%s", b[max(0, len(b)-3000):])
	}
	// Hop 10: the status PATCH the kubelet sends (strategic merge on /status).
	pk, pr := via("kubectl-patch-status")
	o, err = exec.Command("kubectl", "--kubeconfig", pk, "patch", "pod", podName, "--subresource=status", "--type=strategic", "-p",
		`{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}`).CombinedOutput()
	log.Printf("kubectl patch: %v %s", err, o)
	pr.close()
	time.Sleep(time.Second)
	dk, dr := via("kubectl-delete")
	o, err = exec.Command("kubectl", "--kubeconfig", dk, "delete", "pod", podName, "--wait=false").CombinedOutput()
	log.Printf("kubectl delete: %v %s", err, o)
	dr.close()
	time.Sleep(2 * time.Second)
	watch.Process.Kill()
	watch.Wait()
	api.Process.Kill()
	api.Wait()
	wr.close()
	sr.close()
	er.close()
}

func kubeconfig(dir, name, addr string) string {
	p := filepath.Join(dir, name+".kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://%s
    insecure-skip-tls-verify: true
users:
- name: u
  user:
    token: %s
contexts:
- name: x
  context: {cluster: c, user: u, namespace: default}
current-context: x
`, addr, apiToken)
	if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
		log.Fatal(err)
	}
	return p
}
