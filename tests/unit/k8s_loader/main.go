// k8s-load renders a kustomization as `kubectl kustomize` does (kustomize's own API, krusty, the library kubectl
// embeds) and decodes every object it renders strictly with Kubernetes' own Go types (k8s.io/api): a field the
// type does not have, a field given twice, a value of the wrong type or a kind it does not know fail, as the API
// server's strict field validation (`kubectl apply --validate=strict`) would refuse them.
//
// Usage: k8s-load DIR
//
// It prints the decoded objects as a JSON array and exits 0, or prints what failed on stderr and exits 1.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: k8s-load DIR")
		os.Exit(2)
	}
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), os.Args[1])
	if err != nil {
		fail(fmt.Errorf("kustomize: %w", err))
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, autoscalingv2.AddToScheme,
		networkingv1.AddToScheme, policyv1.AddToScheme, rbacv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			fail(err)
		}
	}
	strict := k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme, scheme,
		k8sjson.SerializerOptions{Yaml: true, Strict: true})
	objects := []json.RawMessage{}
	for _, resource := range resources.Resources() {
		text, err := resource.AsYAML()
		if err != nil {
			fail(err)
		}
		object, _, err := strict.Decode(text, nil, nil)
		if err != nil {
			fail(fmt.Errorf("%s %s: %w", resource.GetKind(), resource.GetName(), err))
		}
		var out bytes.Buffer
		// Encoded back from the typed object: what Kubernetes would store, defaults aside.
		if err := k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme, scheme,
			k8sjson.SerializerOptions{}).Encode(object, &out); err != nil {
			fail(err)
		}
		objects = append(objects, json.RawMessage(bytes.TrimSpace(out.Bytes())))
	}
	if err := json.NewEncoder(os.Stdout).Encode(objects); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
