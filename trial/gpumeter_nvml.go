//go:build cgo && linux

package trial

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlSampler reads one device through NVML, which go-nvml loads with
// dlopen (libnvidia-ml.so.1), so machines without a driver are unaffected.
type nvmlSampler struct {
	lib nvml.Interface
	dev nvml.Device
}

// openNVML finds the device with the given PCI bus id (the one the CUDA
// backend opened: NVML numbers devices without CUDA_VISIBLE_DEVICES).
func openNVML(pciBusID string) (gpuSampler, error) {
	lib := nvml.New()
	if r := lib.Init(); r != nvml.SUCCESS {
		return nil, fmt.Errorf("NVML: %s", lib.ErrorString(r))
	}
	dev, r := lib.DeviceGetHandleByPciBusId(pciBusID)
	if r != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("NVML: device %s: %s", pciBusID, lib.ErrorString(r))
	}
	return &nvmlSampler{lib: lib, dev: dev}, nil
}

func (s *nvmlSampler) energyMJ() (uint64, bool) {
	mj, r := s.dev.GetTotalEnergyConsumption()
	return mj, r == nvml.SUCCESS
}

func (s *nvmlSampler) utilisation() (float64, uint64, bool) {
	u, r := s.dev.GetUtilizationRates()
	if r != nvml.SUCCESS {
		return 0, 0, false
	}
	mem, r := s.dev.GetMemoryInfo()
	if r != nvml.SUCCESS {
		return float64(u.Gpu), 0, true
	}
	return float64(u.Gpu), mem.Used, true
}

func (s *nvmlSampler) close() { s.lib.Shutdown() }
