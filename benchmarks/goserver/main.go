// The go-control-plane peer: an ADS server (SotW and Delta) on go-control-plane's
// snapshot cache, serving the resources our control plane built (a dump written by
// benchmarks/snapshot.py). Proxies are grouped by their node metadata NAMESPACE, as
// route configurations differ per namespace. Commands on stdin, one JSON per line:
//
//	{"cmd": "state", "k": k} -> {"t": CLOCK_MONOTONIC at receipt}; SetSnapshot to state k
//	{"cmd": "quit"}
//
// Built by build.sh into ~/.cache/controlplane/bench/, never into the repository.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

type quiet struct{}

func (quiet) Debugf(string, ...interface{}) {}
func (quiet) Infof(string, ...interface{})  {}
func (quiet) Warnf(string, ...interface{})  {}
func (quiet) Errorf(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "go-control-plane: "+f+"\n", a...)
}

type byNamespace struct{}

func (byNamespace) ID(node *core.Node) string {
	if node != nil {
		if f, ok := node.GetMetadata().GetFields()["NAMESPACE"]; ok {
			return f.GetStringValue()
		}
	}
	return "default"
}

var shortType = map[string]string{
	"CDS": resource.ClusterType, "EDS": resource.EndpointType,
	"LDS": resource.ListenerType, "RDS": resource.RouteType,
}

func newMessage(short string) proto.Message {
	switch short {
	case "CDS":
		return &cluster.Cluster{}
	case "EDS":
		return &endpoint.ClusterLoadAssignment{}
	case "LDS":
		return &listener.Listener{}
	default:
		return &route.RouteConfiguration{}
	}
}

func readResources(path, short string) []types.Resource {
	f, err := os.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var out []types.Resource
	for {
		m := newMessage(short)
		if err := (protodelim.UnmarshalOptions{MaxSize: -1}).UnmarshalFrom(r, m); err != nil {
			if err.Error() == "EOF" || strings.HasSuffix(err.Error(), "EOF") {
				return out
			}
			panic(fmt.Sprintf("%s: %v", path, err))
		}
		out = append(out, m)
	}
}

// loadState builds one snapshot per namespace group for state k.
func loadState(dir string, k int) map[string]*cachev3.Snapshot {
	d := filepath.Join(dir, fmt.Sprint(k))
	raw, err := os.ReadFile(filepath.Join(d, "manifest.json"))
	if err != nil {
		panic(err)
	}
	var manifest map[string]map[string]string
	if err := json.Unmarshal(raw, &manifest); err != nil {
		panic(err)
	}
	shared := map[string]cachev3.Resources{}
	for _, short := range []string{"CDS", "EDS", "LDS"} {
		v := manifest[short]["all"]
		shared[short] = cachev3.NewResources(v, readResources(filepath.Join(d, short+".all.bin"), short))
	}
	out := map[string]*cachev3.Snapshot{}
	for group, v := range manifest["RDS"] {
		s := &cachev3.Snapshot{}
		for _, short := range []string{"CDS", "EDS", "LDS"} {
			s.Resources[cachev3.GetResponseType(shortType[short])] = shared[short]
		}
		s.Resources[cachev3.GetResponseType(resource.RouteType)] = cachev3.NewResources(
			v, readResources(filepath.Join(d, "RDS."+group+".bin"), "RDS"))
		out[group] = s
	}
	return out
}

func monotonic() float64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

func main() {
	dump := flag.String("dump", "", "dump directory from benchmarks/snapshot.py")
	address := flag.String("address", "127.0.0.1:0", "listen address (loopback)")
	procs := flag.Int("procs", 0, "GOMAXPROCS (0: Go's default)")
	flag.Parse()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	if !strings.HasPrefix(*address, "127.") {
		fmt.Fprintln(os.Stderr, "loopback (127.0.0.0/8) only")
		os.Exit(2)
	}
	var meta struct {
		States int `json:"states"`
	}
	raw, err := os.ReadFile(filepath.Join(*dump, "states.json"))
	if err != nil {
		panic(err)
	}
	_ = json.Unmarshal(raw, &meta)
	states := make([]map[string]*cachev3.Snapshot, meta.States)
	for k := range states {
		states[k] = loadState(*dump, k)
	}

	ctx := context.Background()
	cache := cachev3.NewSnapshotCache(true, byNamespace{}, quiet{})
	set := func(k int) {
		groups := make([]string, 0, len(states[k]))
		for g := range states[k] {
			groups = append(groups, g)
		}
		sort.Strings(groups)
		for _, g := range groups {
			if err := cache.SetSnapshot(ctx, g, states[k][g]); err != nil {
				panic(err)
			}
		}
	}
	set(0)

	srv := serverv3.NewServer(ctx, cache, nil)
	grpcServer := grpc.NewServer(
		grpc.MaxConcurrentStreams(1000000),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.MaxSendMsgSize(256<<20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{PermitWithoutStream: true}),
	)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(grpcServer, srv)
	lis, err := net.Listen("tcp", *address)
	if err != nil {
		panic(err)
	}
	go func() { _ = grpcServer.Serve(lis) }()

	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]any{"ready": true, "port": lis.Addr().(*net.TCPAddr).Port,
		"pid": os.Getpid()})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var cmd struct {
			Cmd string `json:"cmd"`
			K   int    `json:"k"`
		}
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			_ = out.Encode(map[string]any{"error": err.Error()})
			continue
		}
		switch cmd.Cmd {
		case "state":
			t := monotonic()
			set(cmd.K)
			_ = out.Encode(map[string]any{"t": t})
		case "quit":
			_ = out.Encode(map[string]any{"ok": true})
			grpcServer.Stop()
			return
		}
	}
	grpcServer.Stop()
}
