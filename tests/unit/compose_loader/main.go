// compose-load loads a compose file exactly as `docker compose` v2.40.3 does (the same compose-go
// release and the same project options, cmd/compose/compose.go toProjectOptions/ToProject), so a test
// can see what a Docker user's command sees without a Docker engine.
//
// Usage: compose-load [--profile NAME]... FILE
//
// It prints {"project": <the loaded model, as `docker compose config --format json`>, "start_errors":
// {service: message}} and exits 0, or prints the loader's error on stderr and exits 1. start_errors holds
// what `docker compose up` would refuse when it starts a service: a secret taken from an environment
// variable that is not set (pkg/compose/secrets.go resolveFileContent, v2.40.3).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	var profiles []string
	args := os.Args[1:]
	for len(args) > 1 && args[0] == "--profile" {
		profiles = append(profiles, args[1])
		args = args[2:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: compose-load [--profile NAME]... FILE")
		os.Exit(2)
	}
	file, err := filepath.Abs(args[0])
	if err != nil {
		fail(err)
	}
	options, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithOsEnv,
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		cli.WithDefaultProfiles(profiles...),
		cli.WithName(""),
	)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	if project, err = project.WithServicesEnabled(); err != nil {
		fail(err)
	}
	if project, err = project.WithSelectedServices(nil); err != nil {
		fail(err)
	}
	project = project.WithoutUnnecessaryResources()

	startErrors := map[string]string{}
	for name, service := range project.Services {
		for _, ref := range service.Secrets {
			secret := project.Secrets[ref.Source]
			if secret.Content != "" || secret.Environment == "" {
				continue
			}
			if _, ok := project.Environment[secret.Environment]; !ok {
				startErrors[name] = fmt.Sprintf("environment variable %q required by secret %q is not set",
					secret.Environment, secret.Name)
			}
		}
	}
	model, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	out, err := json.Marshal(map[string]any{"project": json.RawMessage(model), "start_errors": startErrors})
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
