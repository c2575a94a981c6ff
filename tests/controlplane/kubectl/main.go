// kubectl, built from its upstream module for the tests: `kubectl kustomize` renders the
// deploy/ overlays, `kubectl auth can-i --list` shows what each ServiceAccount may do.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
	os.Exit(0)
}
