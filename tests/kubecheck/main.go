// kubecheck: asks Kubernetes' own Go libraries the questions our Python code answers on its own,
// so tests can hold the two to the same verdicts.
//
//	kubecheck kstatus    stdin: a JSON array of objects; stdout: for each, the status that kstatus
//	                     (sigs.k8s.io/cli-utils/pkg/kstatus/status) computes, as Flux's health
//	                     checks, kpt and Config Sync read it: [{"status": "Current", "message": "..."}]
//	kubecheck quantity   stdin: a JSON array of strings; stdout: for each, whether the API server's
//	                     quantity parser (k8s.io/apimachinery resource.ParseQuantity, which CEL's
//	                     isQuantity() calls) accepts it, its sign, and whether it is above the largest
//	                     amount the CRD's CEL rule allows (quantity(self).compareTo(max) > 0):
//	                     [{"valid": true, "sign": 1, "aboveMax": false}]
//
// Built by tests/cluster/build.sh (component kubecheck); asked through tests/kubecheck/__init__.py by
// tests/unit/test_status.py (kstatus) and tests/unit/test_spec_inputs.py (quantities).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type kstatusResult struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type quantityResult struct {
	Valid    bool `json:"valid"`
	Sign     int  `json:"sign"`
	AboveMax bool `json:"aboveMax"`
}

// The largest quantity a TrainingRun may ask for (trainrun.spec.quantity.QUANTITY_MAX_TEXT): 2^63-1 thousandths.
var maxQuantity = resource.MustParse("9223372036854775807m")

func fail(code int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kubecheck: "+format+"\n", args...)
	os.Exit(code)
}

func kstatus(data []byte) interface{} {
	// The apimachinery decoder keeps whole numbers int64, as the API server's objects have them.
	var objects []map[string]interface{}
	if err := utiljson.Unmarshal(data, &objects); err != nil {
		fail(2, "stdin is not a JSON array of objects: %v", err)
	}
	results := make([]kstatusResult, 0, len(objects))
	for index, object := range objects {
		computed, err := status.Compute(&unstructured.Unstructured{Object: object})
		if err != nil {
			fail(1, "object %d: %v", index, err)
		}
		results = append(results, kstatusResult{Status: computed.Status.String(), Message: computed.Message})
	}
	return results
}

func quantity(data []byte) interface{} {
	var texts []string
	if err := json.Unmarshal(data, &texts); err != nil {
		fail(2, "stdin is not a JSON array of strings: %v", err)
	}
	results := make([]quantityResult, 0, len(texts))
	for _, text := range texts {
		parsed, err := resource.ParseQuantity(text)
		if err != nil {
			results = append(results, quantityResult{})
			continue
		}
		results = append(results, quantityResult{Valid: true, Sign: parsed.Sign(), AboveMax: parsed.Cmp(maxQuantity) > 0})
	}
	return results
}

func main() {
	if len(os.Args) != 2 {
		fail(2, "usage: kubecheck kstatus|quantity < input.json")
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(2, "reading stdin: %v", err)
	}
	var results interface{}
	switch os.Args[1] {
	case "kstatus":
		results = kstatus(data)
	case "quantity":
		results = quantity(data)
	default:
		fail(2, "unknown question %q: kstatus or quantity", os.Args[1])
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fail(1, "%v", err)
	}
}
