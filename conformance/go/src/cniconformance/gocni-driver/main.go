// gocni-driver: containerd's own CNI layer (Debian's golang-github-containerd-go-cni-dev,
// go-cni 1.1, on libcni 1.1) around one conflist, so conformance/tests/libcni.rs runs
// our plugins the way containerd's CRI does: go-cni converts every result to 1.0.0,
// names the interface eth0 (prefix "eth", first network), and keeps libcni's result
// cache in its default place (/var/lib/cni, keyed by network name and container id).
//
//	gocni-driver ADD|CHECK|DEL CONFLIST CONTAINER_ID NETNS
//
// Environment: CNI_PATH (plugin dirs, colon-separated), CAP_ARGS (optional JSON
// object of capability args). ADD prints {"interfaces": {name: {"IPConfigs": ...}}} as
// go-cni returns it; any error goes to stderr with exit status 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	gocni "github.com/containerd/go-cni"
)

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "gocni-driver: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: %s ADD|CHECK|DEL CONFLIST CONTAINER_ID NETNS", os.Args[0])
	}
	cmd, confPath, id, netns := os.Args[1], os.Args[2], os.Args[3], os.Args[4]

	var opts []gocni.NamespaceOpts
	if caps := os.Getenv("CAP_ARGS"); caps != "" {
		var m map[string]interface{}
		if err := json.Unmarshal([]byte(caps), &m); err != nil {
			fail("CAP_ARGS: %v", err)
		}
		for k, v := range m {
			opts = append(opts, gocni.WithCapability(k, v))
		}
	}
	cni, err := gocni.New(
		gocni.WithPluginDir(filepath.SplitList(os.Getenv("CNI_PATH"))),
		gocni.WithInterfacePrefix("eth"),
		gocni.WithMinNetworkCount(1),
	)
	if err != nil {
		fail("%v", err)
	}
	if err := cni.Load(gocni.WithConfListFile(confPath)); err != nil {
		fail("%s: %v", confPath, err)
	}
	ctx := context.Background()

	switch cmd {
	case "ADD":
		res, err := cni.Setup(ctx, id, netns, opts...)
		if err != nil {
			fail("ADD: %v", err)
		}
		out, err := json.Marshal(res)
		if err != nil {
			fail("encoding the result: %v", err)
		}
		fmt.Println(string(out))
	case "CHECK":
		if err := cni.Check(ctx, id, netns, opts...); err != nil {
			fail("CHECK: %v", err)
		}
	case "DEL":
		if err := cni.Remove(ctx, id, netns, opts...); err != nil {
			fail("DEL: %v", err)
		}
	default:
		fail("unknown command %q", cmd)
	}
}
